"""One-off migration of state written before transcripts were encrypted.

Earlier versions kept each call's transcript in clear in ``call:{id}:transcript`` and the words
of each turn in its ``caller_turn``/``agent_turn`` event. On start-up, ``serve`` seals every
such transcript into an encrypted object, replaces the words in events by their length, and
deletes the clear copies; then Redis rewrites its append-only file. Nothing is lost: a
transcript is deleted only after its encrypted copy is finalized.
"""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from recordings.crypto import Identity
from recordings.lifecycle import compact
from recordings.objects import EncryptedObjects
from recordings.transcripts import TranscriptLog, TurnRecord
from store import keys

log = logging.getLogger(__name__)
_TURN_EVENTS = ('"caller_turn"', '"agent_turn"')


async def migrate_clear_transcripts(redis: Redis, objects: EncryptedObjects) -> int:
    """Encrypt every transcript still in clear; how many calls were migrated."""
    migrated = 0
    async for key in redis.scan_iter(match="call:*:transcript", count=500):
        call_id = str(key).split(":")[1]
        tenant = str(await redis.hget(keys.call(call_id), "tenant") or "") or "default"
        expires = float(await redis.hget(keys.call(call_id), "expires_at") or 0) or 1e12
        transcript = TranscriptLog(objects, Identity(tenant, call_id, "transcript"), expires)
        for raw in await redis.lrange(key, 0, -1):
            turn = json.loads(raw)
            await transcript.add(
                TurnRecord(turn["role"], turn["text"], turn["at"], turn.get("interrupted", False))
            )
        await transcript.finish()
        await _strip_event_words(redis, call_id)
        await redis.delete(key)
        migrated += 1
    if migrated:
        await compact(redis)
        log.warning("clear transcripts encrypted", extra={"calls": migrated})
    return migrated


async def _strip_event_words(redis: Redis, call_id: str) -> None:
    events = await redis.lrange(keys.call_events(call_id), 0, -1)
    for index, raw in enumerate(events):
        if not any(t in raw for t in _TURN_EVENTS):
            continue
        event = json.loads(raw)
        text = event.get("data", {}).pop("text", None)
        if text is not None:
            event["data"]["chars"] = len(text)
            await redis.lset(keys.call_events(call_id), index, json.dumps(event))
