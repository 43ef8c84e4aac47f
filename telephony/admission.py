"""Caps on calls in progress: per tenant (inbound, in Redis) and per process (in memory).

An inbound call beyond a cap is refused with its carrier's busy answer. A call is counted under
``{carrier}:{carrier call id}``, so repeated deliveries of one call's webhook share one place.

- Per tenant: one Lua script admits a call into ``limits:{tenant}:inbound`` (a zset scored by
  the time the call must be over by), so concurrent webhooks cannot together pass the cap.
  At the cap, calls whose record says they are over (a final state) are dropped and the script
  runs once more, which is how a call that ended without a media stream (the caller hung up
  while it rang) stops counting.
  A media session's end removes its call at once.
- Per process: the calls whose media session runs here, plus calls admitted here whose media
  stream has not yet arrived (for at most :data:`ATTACH_WINDOW_S`).
  Such a place is given back early once the call is over (the caller hung up while it rang)
  or its media session runs on another process (:meth:`Admission.settle_pending`).
- Draining (the process is shutting down): every new inbound call is refused; the media streams
  of calls already admitted are still taken.

Each decision is counted, and the process's count, cap and drain state are gauges
(:mod:`telephony.metrics`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from calls.records import member
from calls.state import CallState
from store import keys
from telephony import metrics

log = logging.getLogger(__name__)

#: How long a call admitted by a webhook holds a place in this process before its media stream
#: arrives (carriers open it within seconds of the answer).
ATTACH_WINDOW_S = 30.0

# Admits ARGV[2] into KEYS[1] unless the tenant's cap (ARGV[4]) is reached; places lapse at
# their score (ARGV[3]: the time the call must be over by).
_ADMIT_INBOUND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"""


@dataclass
class ProcessSlots:
    """Calls in progress in this process, against ``max_calls``; ``now`` passed in."""

    max_calls: int
    #: member -> time its place lapses (``inf`` once its media session runs here)
    held: dict[str, float] = field(default_factory=dict)

    def _expire(self, now: float) -> None:
        for m in [m for m, until in self.held.items() if until <= now]:
            del self.held[m]

    def admit(self, who: str, now: float) -> bool:
        """Hold a place for ``who`` until its media stream arrives; ``False`` when full."""
        self._expire(now)
        if who in self.held:
            return True
        if len(self.held) >= self.max_calls:
            return False
        self.held[who] = now + ATTACH_WINDOW_S
        return True

    def attach(self, who: str) -> None:
        """``who``'s media session runs here now (counted until :meth:`release`)."""
        self.held[who] = math.inf

    def release(self, who: str) -> None:
        """``who`` no longer counts."""
        self.held.pop(who, None)

    def pending(self, now: float) -> list[str]:
        """Calls admitted here whose media session has not started here (yet)."""
        self._expire(now)
        return [m for m, until in self.held.items() if until != math.inf]

    def holds(self, who: str, now: float) -> bool:
        """Whether ``who`` is counted now."""
        return self.held.get(who, -math.inf) > now

    def in_progress(self, now: float) -> int:
        """Calls counted now."""
        self._expire(now)
        return len(self.held)


@dataclass(frozen=True)
class Busy:
    """An inbound call refused: ``max_calls``, ``inbound_concurrent_calls`` or ``draining``."""

    limit: str


class Admission:
    """Admits inbound calls against the per-process and per-tenant caps."""

    def __init__(
        self, redis: Redis, max_calls: int, tenant_inbound_calls: int, max_call_seconds: int
    ) -> None:
        """Caps ``max_calls`` per process and ``tenant_inbound_calls`` per tenant.

        A tenant's call stops counting at the latest ``max_call_seconds`` + 60 s after it was
        admitted (a crash that lost its end).
        """
        self.redis = redis
        self.slots = ProcessSlots(max_calls)
        self.tenant_inbound_calls = tenant_inbound_calls
        self.max_call_seconds = max_call_seconds
        #: Set by :meth:`drain`: no new inbound call is admitted.
        self.draining = False
        #: Told once when the drain starts (e.g. the SIP registrations stop).
        self.drain_listeners: list[Callable[[], None]] = []
        self._admit = redis.register_script(_ADMIT_INBOUND)
        metrics.MAX_CALLS.set(max_calls)
        metrics.DRAINING.set(0)
        metrics.CALLS_IN_PROGRESS.set_function(lambda: self.slots.in_progress(time.time()))

    def drain(self) -> None:
        """Refuse every new inbound call from now on (the process is shutting down)."""
        self.draining = True
        metrics.DRAINING.set(1)
        for listener in list(self.drain_listeners):
            try:
                listener()
            except Exception as e:
                log.warning("drain listener failed", extra={"error": type(e).__name__})

    async def settle_pending(self, now: float) -> None:
        """Give back the places of calls over, or whose media session runs on another process.

        A Redis failure leaves them to lapse on their own.
        """
        pending = self.slots.pending(now)
        if not pending:
            return
        try:
            ids = await self.redis.mget([keys.carrier_call(*m.split(":", 1)) for m in pending])
            known = [(m, str(i)) for m, i in zip(pending, ids, strict=True) if i]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, call_id in known:
                    pipe.hmget(keys.call(call_id), ["state", "node"])
                found = await pipe.execute()
        except Exception:
            log.warning("could not check calls waiting for their media", exc_info=True)
            return
        final = {str(s) for s in CallState.final()}
        for (m, _), (state, node) in zip(known, found, strict=True):
            if state in final or node:  # over, or its media runs elsewhere
                if self.slots.held.get(m) != math.inf:
                    self.slots.release(m)

    def at_capacity(self, now: float) -> bool:
        """Whether a new call would be refused by the per-process cap."""
        return self.slots.in_progress(now) >= self.slots.max_calls

    async def admit(self, tenant: str, who: str, now: float) -> Busy | None:
        """Count inbound call ``who`` of ``tenant``, or say which cap refuses it.

        A repeated webhook of a call already counted here is admitted again, even while
        draining: the carrier gets the same answer.
        """
        again = self.slots.holds(who, now)
        busy = await self._decide(tenant, who, now, again)
        if busy is not None or not again:  # a repeat of an admitted call is not a new one
            metrics.count_admission(busy.limit if busy else None)
        return busy

    async def _decide(self, tenant: str, who: str, now: float, again: bool) -> Busy | None:
        if self.draining and not again:
            return Busy("draining")
        if not self.slots.admit(who, now):
            await self.settle_pending(now)  # at the cap: places of calls over may be free
            if not self.slots.admit(who, now):
                return Busy("max_calls")
        args: list[str | int] = [
            repr(now),
            who,
            repr(now + self.max_call_seconds + 60),
            self.tenant_inbound_calls,
        ]
        try:
            ok = await self._admit(keys=[keys.limit_inbound(tenant)], args=args)
            if not int(ok):  # at the cap: calls that are over may still be counted
                await self._drop_finished(tenant, who)
                ok = await self._admit(keys=[keys.limit_inbound(tenant)], args=args)
        except BaseException:
            if not again:  # a repeat keeps the place its call holds
                self.slots.release(who)
            raise
        if not int(ok):
            if not again:
                self.slots.release(who)
            return Busy("inbound_concurrent_calls")
        return None

    async def _drop_finished(self, tenant: str, who: str) -> None:
        """Drop the tenant's counted calls whose record says they are over (not ``who``).

        A final state never changes, so this needs no atomicity with the admission after it.
        """
        key = keys.limit_inbound(tenant)
        members = [str(m) for m in await self.redis.zrange(key, 0, -1) if m != who]
        if not members:
            return
        ids = await self.redis.mget([keys.carrier_call(*m.split(":", 1)) for m in members])
        known = [(m, str(call_id)) for m, call_id in zip(members, ids, strict=True) if call_id]
        if not known:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, call_id in known:
                pipe.hget(keys.call(call_id), "state")
            states = await pipe.execute()
        final = {str(s) for s in CallState.final()}
        over = [m for (m, _), state in zip(known, states, strict=True) if state in final]
        if over:
            await self.redis.zrem(key, *over)

    def attach(self, who: str) -> None:
        """The call's media session runs in this process now."""
        self.slots.attach(who)

    async def release(self, tenant: str, who: str) -> None:
        """The call is over: it no longer counts anywhere (a Redis failure is only logged)."""
        self.slots.release(who)
        try:
            await self.redis.zrem(keys.limit_inbound(tenant), who)
        except Exception:  # it lapses on its own at its deadline
            log.warning("could not release an inbound call's place", exc_info=True)


__all__ = ["ATTACH_WINDOW_S", "Admission", "Busy", "ProcessSlots", "member"]
