"""A process's heartbeat lease and the calls it carries, so a survivor can end them if it dies.

``node:{id}`` holds the lease (SET PX); ``nodes`` scores each process by when its lease lapses
(ms), so a survivor finds the lost ones without a scan; ``node:{id}:calls`` holds the calls
whose media runs on the process, and each call's hash names its holder (field ``node``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from redis.asyncio import Redis

from calls.store import CallStore
from cluster.metrics import HEARTBEATS
from store import keys

log = logging.getLogger(__name__)
# Moves the members of KEYS[1] not in ARGV[2..] to KEYS[2], listing ARGV[1] in KEYS[3] as lapsed.
_HAND_OVER = """
local kept = {}
for i = 2, #ARGV do kept[ARGV[i]] = true end
local moved = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not kept[id] then
    redis.call('SMOVE', KEYS[1], KEYS[2], id)
    moved = moved + 1
  end
end
if moved > 0 then redis.call('ZADD', KEYS[3], 0, ARGV[1]) end
return moved
"""


class Node:
    """This process in the cluster: its lease renewed every heartbeat, its calls listed."""

    def __init__(
        self, redis: Redis, node_id: str, heartbeat_s: float, lease_s: float, calls: CallStore
    ) -> None:
        """Renew a lease of ``lease_s`` every ``heartbeat_s``; holders are written to ``calls``."""
        self.redis = redis
        self.node_id = node_id
        self.heartbeat_s = heartbeat_s
        self.lease_ms = max(1, int(lease_s * 1000))
        self.calls = calls
        #: Calls whose media runs here (kept in memory too: they are listed again after a lapse).
        self.carried: set[str] = set()
        self._registered = False
        self._hand_over = redis.register_script(_HAND_OVER)

    async def beat(self, now: float) -> bool:
        """Renew the lease once; ``False`` when the state store failed (logged, not raised).

        A lease found gone (this process was partitioned away longer than the lease, and may
        have been reaped) is logged as an error and registered again with this process's calls.
        """
        until = int(now * 1000) + self.lease_ms
        try:
            if not self._registered:
                await self._hand_over_previous()
            async with self.redis.pipeline(transaction=True) as p:
                p.set(keys.node(self.node_id), str(until), px=self.lease_ms, get=True)
                p.zadd(keys.nodes(), {self.node_id: until})
                prior, _ = await p.execute()
            if prior is None and self._registered:
                log.error(
                    "this process's lease had lapsed (it may have been reaped): registered again",
                    extra={"node": self.node_id, "calls": len(self.carried)},
                )
                if self.carried:
                    await self.redis.sadd(keys.node_calls(self.node_id), *self.carried)
            self._registered = True
        except Exception as e:  # a failover takes seconds: the next beat tries again
            log.warning("heartbeat failed", extra={"node": self.node_id, "error": str(e)})
            HEARTBEATS.labels("failed").inc()
            return False
        HEARTBEATS.labels("ok").inc()
        return True

    async def _hand_over_previous(self) -> None:
        """Hand the calls of an earlier process of this name over to the reapers.

        A restarted pod that died with calls on left them listed under this name: those this
        process does not carry move to a lapsed name of their own, which a survivor (this
        process too) reaps.
        """
        heir = f"{self.node_id}.prev-{secrets.token_hex(3)}"
        moved = await self._hand_over(
            keys=[keys.node_calls(self.node_id), keys.node_calls(heir), keys.nodes()],
            args=[heir, *self.carried],
        )
        if int(moved):
            log.warning(
                "calls of an earlier process of this name handed over",
                extra={"to": heir, "calls": int(moved)},
            )

    async def run(self) -> None:
        """Beat every ``heartbeat_s`` until cancelled."""
        while True:
            await self.beat(time.time())
            await asyncio.sleep(self.heartbeat_s)

    async def carry(self, call_id: str) -> None:
        """The call's media runs here now: listed under this process, named its holder."""
        self.carried.add(call_id)
        try:
            await self.redis.sadd(keys.node_calls(self.node_id), call_id)
            await self.calls.hold(call_id, self.node_id)
        except Exception as e:  # the call goes on; the next lapse lists it again
            log.warning("could not record the call's holder", extra={"error": str(e)})

    async def drop(self, call_id: str) -> None:
        """The call's media no longer runs here."""
        try:
            await self.calls.let_go(call_id, self.node_id)
            await self.redis.srem(keys.node_calls(self.node_id), call_id)
        except Exception as e:  # a survivor finds the call over (or ends it) if this process dies
            log.warning("could not forget the call's holder", extra={"error": str(e)})
        self.carried.discard(call_id)

    async def stop(self, now: float) -> None:
        """Leave the cluster: the lease is deleted, and this process's keys when it has no calls.

        Calls still carried (a drain that ran out of time) are left listed, the process marked
        lapsed: a survivor ends them at its next heartbeat.
        """
        try:
            async with self.redis.pipeline(transaction=True) as p:
                p.delete(keys.node(self.node_id))
                if self.carried:
                    p.zadd(keys.nodes(), {self.node_id: int(now * 1000) - 1})
                else:
                    p.delete(keys.node_calls(self.node_id))
                    p.zrem(keys.nodes(), self.node_id)
                await p.execute()
        except Exception as e:  # the lease lapses on its own
            log.warning("could not leave the cluster cleanly", extra={"error": str(e)})
        if self.carried:
            log.warning(
                "left the cluster with calls in progress", extra={"calls": len(self.carried)}
            )
