"""What the data lifecycle needs of the call store, as a Protocol (``calls/archive.py`` has it).

Recordings never learns how calls are kept: it reads, holds, lists and deletes them through this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol


class CallArchive(Protocol):
    """Calls as the lifecycle sees them: records (string fields), events, indexes."""

    async def fields(self, call_id: str) -> dict[str, str]:
        """A call's record as stored (empty if there is none)."""
        ...

    async def update(self, call_id: str, fields: Mapping[str, str]) -> None:
        """Set ``fields`` of a call's record."""
        ...

    async def hold(self, call_id: str, reason: str | None) -> None:
        """Place a legal hold for ``reason`` (field ``legal_hold``), or lift it (``None``)."""
        ...

    async def delete(self, call_id: str) -> None:
        """Forget a call: its record, events, transcript, object index and every index of it."""
        ...

    async def due(self, now: float, limit: int) -> list[str]:
        """At most ``limit`` ids of calls past their retention at ``now``, earliest first."""
        ...

    async def ids_of(self, tenant: str) -> list[str]:
        """The tenant's call ids, oldest first."""
        ...

    async def events(self, call_id: str) -> list[str]:
        """A call's events as stored (JSON), in arrival order."""
        ...

    async def replace_event(self, call_id: str, index: int, event: str) -> None:
        """Overwrite the call's event at ``index`` with ``event`` (JSON)."""
        ...

    def clear_transcripts(self) -> AsyncIterator[str]:
        """Ids of calls that still hold a transcript in clear (state from before encryption)."""
        ...

    async def clear_turns(self, call_id: str) -> list[str]:
        """The turns (JSON) of a call's transcript in clear."""
        ...

    async def drop_clear_transcript(self, call_id: str) -> None:
        """Delete a call's transcript in clear."""
        ...
