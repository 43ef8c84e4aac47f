"""Encrypted transcripts: each turn of a call sealed as one segment of the call's transcript."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass

from recordings.crypto import Identity
from recordings.objects import EncryptedObjects, ObjectWriter


@dataclass(frozen=True)
class TurnRecord:
    """One utterance as stored in a transcript segment."""

    role: str
    text: str
    at: float
    interrupted: bool = False


class TranscriptLog:
    """The call's turns, each sealed as one segment of an encrypted transcript.

    Writing and discarding take turns on one lock: a discard that arrives while a turn is being
    written (the object being created, a segment being stored) waits for that write and then
    deletes it, and no turn is written after a discard.
    """

    def __init__(self, objects: EncryptedObjects, identity: Identity, expires_at: float) -> None:
        """Write as ``identity``."""
        self.objects, self.identity, self.expires_at = objects, identity, expires_at
        self.writer: ObjectWriter | None = None
        self.discarded = False
        self._lock = asyncio.Lock()
        #: The deletion a discard started (it outlives a cancelled caller).
        self._deleting: asyncio.Future[None] | None = None

    async def add(self, turn: TurnRecord) -> None:
        """Seal and store one turn (the object is created with the first)."""
        async with self._lock:
            if self.discarded:
                return
            if self.writer is None:
                self.writer = await self.objects.create(
                    self.identity, expires_at=repr(self.expires_at)
                )
            await self.writer.append(json.dumps(asdict(turn)).encode())

    async def finish(self) -> None:
        """Finalize the transcript (or see a discard through)."""
        if self._deleting is not None:
            await self._deleting
        async with self._lock:
            if self.writer is not None and not self.discarded:
                await self.writer.finalize()

    async def discard(self) -> None:
        """Delete the transcript, including what a write in progress is storing.

        The deletion runs to its end even if the call is cancelled meanwhile; :meth:`finish`
        waits for it.
        """
        self.discarded = True  # a write waiting for the lock stores nothing
        if self._deleting is None:
            self._deleting = asyncio.ensure_future(self._delete())
        await asyncio.shield(self._deleting)

    async def _delete(self) -> None:
        async with self._lock:
            if self.writer is not None:
                self.writer.finished = True
            await self.objects.delete_identity(self.identity)


async def read_turns(objects: EncryptedObjects, call_id: str) -> tuple[list[TurnRecord], bool]:
    """A call's transcript turns and whether the transcript is complete."""
    turns: list[TurnRecord] = []
    complete = True
    for info in await objects.of_call(call_id, "transcript"):
        parts, summary = await objects.open_parts(info)
        turns += [TurnRecord(**json.loads(p)) for p in parts if p]
        complete = complete and summary.complete
    return turns, complete
