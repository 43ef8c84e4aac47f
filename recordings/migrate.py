"""One-off migration of state written before transcripts were encrypted.

That state keeps a call's transcript in clear and the words of each turn in its
``caller_turn``/``agent_turn`` event (both read through the call store's
:class:`~recordings.archive.CallArchive`). On start-up, ``serve`` seals every such transcript into
an encrypted object, replaces the words in events by their length, and deletes the clear copies;
then Redis rewrites its append-only file. Nothing is lost: a transcript is deleted only after its
encrypted copy is finalized.
"""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from recordings.archive import CallArchive
from recordings.crypto import Identity
from recordings.lifecycle import compact
from recordings.objects import EncryptedObjects
from recordings.transcripts import TranscriptLog, TurnRecord

log = logging.getLogger(__name__)
_TURN_EVENTS = ('"caller_turn"', '"agent_turn"')


async def migrate_clear_transcripts(
    redis: Redis, calls: CallArchive, objects: EncryptedObjects
) -> int:
    """Encrypt every transcript still in clear; how many calls were migrated."""
    migrated = 0
    async for call_id in calls.clear_transcripts():
        record = await calls.fields(call_id)
        tenant = record.get("tenant") or "default"
        expires = float(record.get("expires_at") or 0) or 1e12
        transcript = TranscriptLog(objects, Identity(tenant, call_id, "transcript"), expires)
        for raw in await calls.clear_turns(call_id):
            turn = json.loads(raw)
            await transcript.add(
                TurnRecord(turn["role"], turn["text"], turn["at"], turn.get("interrupted", False))
            )
        await transcript.finish()
        await _strip_event_words(calls, call_id)
        await calls.drop_clear_transcript(call_id)
        migrated += 1
    if migrated:
        await compact(redis)
        log.warning("clear transcripts encrypted", extra={"calls": migrated})
    return migrated


async def _strip_event_words(calls: CallArchive, call_id: str) -> None:
    for index, raw in enumerate(await calls.events(call_id)):
        if not any(t in raw for t in _TURN_EVENTS):
            continue
        event = json.loads(raw)
        text = event.get("data", {}).pop("text", None)
        if text is not None:
            event["data"]["chars"] = len(text)
            await calls.replace_event(call_id, index, json.dumps(event))
