"""Which configured carriers routing may use at a time: on the register in force, not down.

A carrier whose API fails is marked down in Redis (``carriers:down``, carrier -> the time it
is usable again, the later time kept), so every process of the platform routes around it.
Routing asks synchronously, many times per second: it reads a copy of that hash which
:meth:`CarrierHealth.refresh_forever` renews every second; a process's own marks count at
once. While Redis does not answer, the last copy and this process's marks stand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from carriers.base import Carrier
from carriers.registry import Carriers
from routing.policy import Health
from routing.subprocessors import Register
from store import keys
from telephony.metrics import CARRIER_UP

log = logging.getLogger(__name__)

#: Seconds between two reads of the shared marks.
REFRESH_SECONDS = 1.0
# KEYS[1] the hash; ARGV carrier, until, carrier, until...: each field keeps the later time.
_MARK = """
for i = 1, #ARGV, 2 do
  local now = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > now then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


class CarrierHealth:
    """The usable carriers at a time; a carrier whose API fails is marked down for a while."""

    def __init__(self, carriers: Carriers, register: Register, redis: Redis | None = None) -> None:
        """Carriers of ``carriers`` are usable while ``register`` allows them and not down.

        ``redis``: where the marks are shared with the other processes (``None``: this
        process's marks only).
        """
        self.carriers = carriers
        self.register = register
        self.redis = redis
        #: Carriers marked down until a time (a carrier API failing), as this process knows.
        self.down_until: dict[Carrier, float] = {}
        #: This process's marks not yet written to Redis.
        self._pending: dict[Carrier, float] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._mark = redis.register_script(_MARK) if redis is not None else None

    def health(self, now: float) -> Health:
        """Usable carriers at ``now``: configured, on the register in force, not marked down."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        usable = frozenset(c for c in self.carriers if self.register.allows(str(c), at))
        return Health(usable, dict(self.down_until))

    def _export(self, now: float) -> None:
        """Set ``bonmoniq_carrier_up`` of every configured carrier as routing sees it at ``now``."""
        health = self.health(now)
        for carrier in self.carriers:
            CARRIER_UP.labels(str(carrier)).set(1 if health.usable(carrier, now) else 0)

    def mark_down(self, carrier: Carrier, until: float) -> None:
        """Leave ``carrier`` out of routing decisions until ``until`` (its API is failing).

        The mark counts here at once; it is written to Redis in the background (and again by
        the next refresh if that write fails).
        """
        self.down_until[carrier] = max(until, self.down_until.get(carrier, 0.0))
        if self._mark is None:
            return
        self._pending[carrier] = max(until, self._pending.get(carrier, 0.0))
        try:
            task = asyncio.get_running_loop().create_task(self._push())
        except RuntimeError:  # no event loop: the refresher writes it
            return
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _push(self) -> None:
        """Write this process's pending marks to Redis; kept for the next try on failure."""
        if self._mark is None or not self._pending:
            return
        marks = dict(self._pending)
        args: list[str | float] = []
        for carrier, until in marks.items():
            args += [str(carrier), until]
        try:
            await self._mark(keys=[keys.carriers_down()], args=args)
        except RedisError as e:
            log.warning("carrier health not shared", extra={"error": type(e).__name__})
            return
        for carrier, until in marks.items():
            if self._pending.get(carrier) == until:
                del self._pending[carrier]

    async def refresh(self) -> bool:
        """Write pending marks, then read every process's; ``False`` if Redis did not answer."""
        if self.redis is None:
            return True
        await self._push()
        try:
            shared = keys.strs(await self.redis.hgetall(keys.carriers_down()))
        except RedisError as e:
            log.warning("carrier health not refreshed", extra={"error": type(e).__name__})
            return False
        down: dict[Carrier, float] = {}
        for name, until in shared.items():
            try:
                down[Carrier(name)] = float(until)
            except ValueError:  # a carrier this version does not know, or a damaged value
                continue
        # Marks only ever lapse: the later of the two times stands, whichever came first.
        for carrier, at in down.items():
            self.down_until[carrier] = max(at, self.down_until.get(carrier, 0.0))
        self._export(time.time())
        return True

    async def refresh_forever(self, every: float = REFRESH_SECONDS) -> None:
        """:meth:`refresh` every ``every`` seconds until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:  # whatever went wrong, the last copy stands until the next try
                log.exception("carrier health refresh failed")
            await asyncio.sleep(every)
