"""Encrypted transcripts: each turn of a call sealed as one segment of the call's transcript."""

from __future__ import annotations

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
    """The call's turns, each sealed as one segment of an encrypted transcript."""

    def __init__(self, objects: EncryptedObjects, identity: Identity, expires_at: float) -> None:
        """Write as ``identity``."""
        self.objects, self.identity, self.expires_at = objects, identity, expires_at
        self.writer: ObjectWriter | None = None
        self.discarded = False

    async def add(self, turn: TurnRecord) -> None:
        """Seal and store one turn (the object is created with the first)."""
        if self.discarded:
            return
        if self.writer is None:
            self.writer = await self.objects.create(self.identity, expires_at=repr(self.expires_at))
        await self.writer.append(json.dumps(asdict(turn)).encode())

    async def finish(self) -> None:
        """Finalize the transcript."""
        if self.writer is not None and not self.discarded:
            await self.writer.finalize()

    async def discard(self) -> None:
        """Delete the transcript."""
        self.discarded = True
        if self.writer is not None:
            await self.writer.discard()


async def read_turns(objects: EncryptedObjects, call_id: str) -> tuple[list[TurnRecord], bool]:
    """A call's transcript turns and whether the transcript is complete."""
    turns: list[TurnRecord] = []
    complete = True
    for info in await objects.of_call(call_id, "transcript"):
        parts, summary = await objects.open_parts(info)
        turns += [TurnRecord(**json.loads(p)) for p in parts if p]
        complete = complete and summary.complete
    return turns, complete
