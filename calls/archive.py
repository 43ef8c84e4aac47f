"""Calls as the data lifecycle reads, holds and deletes them, on the key layout of ``store.keys``.

:class:`CallArchive` has the shape ``recordings.archive.CallArchive`` asks for (structural
typing: neither package imports the other).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from redis.asyncio import Redis

from store import keys


class CallArchive:
    """Calls' records, events and indexes in Redis (decode_responses=True)."""

    def __init__(self, redis: Redis) -> None:
        """Use ``redis``."""
        self.redis = redis

    async def fields(self, call_id: str) -> dict[str, str]:
        """A call's record as stored (empty if there is none)."""
        return keys.strs(await self.redis.hgetall(keys.call(call_id)))

    async def update(self, call_id: str, fields: Mapping[str, str]) -> None:
        """Set ``fields`` of a call's record."""
        await self.redis.hset(keys.call(call_id), mapping=keys.fields(fields))

    async def hold(self, call_id: str, reason: str | None) -> None:
        """Place a legal hold for ``reason`` (field ``legal_hold``), or lift it (``None``)."""
        if reason is None:
            await self.redis.hdel(keys.call(call_id), "legal_hold")
        else:
            await self.redis.hset(keys.call(call_id), mapping={"legal_hold": reason})

    async def delete(self, call_id: str) -> None:
        """Forget a call: its record, events, transcript, object index and every index of it."""
        record = await self.fields(call_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.call(call_id), keys.call_events(call_id))
            p.delete(keys.call_transcript(call_id), keys.call_objects(call_id))
            if record.get("carrier") and record.get("carrier_call_id"):
                p.delete(keys.carrier_call(record["carrier"], record["carrier_call_id"]))
            p.zrem(keys.calls(), call_id)
            p.zrem(keys.retention(), call_id)
            if record.get("tenant"):
                p.zrem(keys.tenant_calls(record["tenant"]), call_id)
            await p.execute()

    async def due(self, now: float, limit: int) -> list[str]:
        """At most ``limit`` ids of calls past their retention at ``now``, earliest first."""
        due = await self.redis.zrangebyscore(keys.retention(), "-inf", repr(now), 0, limit)
        return [str(c) for c in due]

    async def ids_of(self, tenant: str) -> list[str]:
        """The tenant's call ids, oldest first."""
        return [str(c) for c in await self.redis.zrange(keys.tenant_calls(tenant), 0, -1)]

    async def events(self, call_id: str) -> list[str]:
        """A call's events as stored (JSON), in arrival order."""
        return [str(e) for e in await self.redis.lrange(keys.call_events(call_id), 0, -1)]

    async def replace_event(self, call_id: str, index: int, event: str) -> None:
        """Overwrite the call's event at ``index`` with ``event`` (JSON)."""
        await self.redis.lset(keys.call_events(call_id), index, event)

    async def clear_transcripts(self) -> AsyncIterator[str]:
        """Ids of calls that still hold a transcript in clear (state from before encryption)."""
        async for key in self.redis.scan_iter(match=keys.call_transcripts(), count=500):
            yield keys.transcript_call_id(str(key))

    async def clear_turns(self, call_id: str) -> list[str]:
        """The turns (JSON) of a call's transcript in clear."""
        return [str(t) for t in await self.redis.lrange(keys.call_transcript(call_id), 0, -1)]

    async def drop_clear_transcript(self, call_id: str) -> None:
        """Delete a call's transcript in clear."""
        await self.redis.delete(keys.call_transcript(call_id))


__all__ = ["CallArchive"]
