"""Ending the calls of lost processes: a survivor marks them failed within a bounded time.

Every heartbeat, each process looks for processes whose lease has lapsed (their score in
``nodes`` is past and ``node:{id}`` is gone) and, holding the lease ``reap:{id}``, ends each of
their calls that is not over: event ``node_lost`` and state ``failed`` (together, once), the
outbound reservation settled for the time used, the inbound place given back, the recording
and transcript marked truncated, and the carrier asked to hang up (a caller whose media
stream died is not left on a silent line). A dead process's calls end within its lease plus one
heartbeat (and the pass itself). A process never reaps itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from calls.events import CallEvent, CallEventType
from calls.records import member
from calls.state import CallState
from calls.store import CallStore
from cluster.lease import Lease
from cluster.metrics import REAPED_CALLS
from recordings.objects import EncryptedObjects
from store import keys

log = logging.getLogger(__name__)
#: Why a lost process's recordings and transcripts are marked truncated.
NODE_LOST = "node_lost"
# Forgets lost process ARGV[1] (KEYS[1] its lease, KEYS[2] its calls, KEYS[3] the processes)
# unless it came back meanwhile.
_FORGET = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


class Reaper:
    """Finds lost processes and ends their calls; one survivor per lost process at a time."""

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        calls: CallStore,
        objects: EncryptedObjects | None,
        lease_s: float,
        hang_up: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """Reap as ``node_id``; each lost process is reaped under a lease of ``lease_s``.

        ``hang_up(carrier, carrier call id)`` ends a reaped call at its carrier.
        """
        self.redis = redis
        self.node_id = node_id
        self.calls = calls
        self.objects = objects
        self.lease_s = lease_s
        self.hang_up = hang_up
        self._forget = redis.register_script(_FORGET)

    async def lost(self, now: float) -> list[str]:
        """Other processes whose lease has lapsed by ``now``."""
        due = await self.redis.zrangebyscore(keys.nodes(), "-inf", int(now * 1000))
        lost = []
        for node in map(str, due):
            if node != self.node_id and not await self.redis.exists(keys.node(node)):
                lost.append(node)
        return lost

    async def reap(self, now: float) -> int:
        """One pass: end the calls of every lost process; how many calls this pass ended."""
        ended = 0
        for node in await self.lost(now):
            lease = Lease(self.redis, f"reap:{node}", self.lease_s, self.node_id)
            if not await lease.acquire():
                continue  # another survivor reaps it
            try:
                ended += await self._reap_node(node, now)
            finally:
                await lease.release()
        return ended

    async def _reap_node(self, node: str, now: float) -> int:
        ended, complete = 0, True
        call_ids = sorted(map(str, await self.redis.smembers(keys.node_calls(node))))
        for call_id in call_ids:
            try:
                ended += await self._end_call(node, call_id, now)
            except Exception:  # kept for the next pass; every step is safe to repeat
                log.exception("could not end a lost process's call", extra={"call_id": call_id})
                complete = False
        if complete:
            await self._forget(
                keys=[keys.node(node), keys.node_calls(node), keys.nodes()], args=[node]
            )
        log.warning("lost process reaped", extra={"node": node, "calls": ended})
        return ended

    async def _end_call(self, node: str, call_id: str, now: float) -> int:
        """End one call of lost process ``node``; 1 if this pass ended it."""
        record = await self.calls.get(call_id)
        if record is None:
            return 0
        event = CallEvent(CallEventType.NODE_LOST, call_id, now, {"node": node})
        moved = await self.calls.end(call_id, CallState.FAILED, event)
        # Each step below is once-only or idempotent: a pass cut short is completed by the next.
        await self.calls.settle(call_id, now, None)
        await self.calls.settle_transfer(call_id, now)
        if record.direction == "inbound":
            place = member(record.carrier, record.carrier_call_id)
            await self.redis.zrem(keys.limit_inbound(record.tenant), place)
        if self.objects is not None:
            for info in await self.objects.of_call(call_id):
                if info.state == "open":
                    await self.objects.mark_truncated(info.object_id, NODE_LOST)
        await self.calls.let_go(call_id, node)
        if moved:
            REAPED_CALLS.inc()
            log.warning("call of a lost process ended", extra={"call_id": call_id, "node": node})
            if self.hang_up is not None and record.carrier_call_id:
                try:
                    await self.hang_up(record.carrier, record.carrier_call_id)
                except Exception as e:  # already over at the carrier, or its API is away
                    log.warning(
                        "carrier not told to hang up a lost call",
                        extra={"call_id": call_id, "error": type(e).__name__},
                    )
        return int(moved)

    async def run(self, interval_s: float) -> None:
        """Reap every ``interval_s`` until cancelled; a failed pass is logged, never raised."""
        while True:
            try:
                await self.reap(time.time())
            except Exception:
                log.exception("reaping lost processes failed")
            await asyncio.sleep(interval_s)
