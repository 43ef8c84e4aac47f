"""Per-tenant outbound limits: calls a minute, calls open at once, spend a day (toll fraud).

Admission is one Lua script, so concurrent requests cannot together pass a limit: it checks the
three counters and, only if all allow the call, records it in all three. A call reserves the
most it can cost (the carrier's hard time limit at the outbound rate); when it ends, the store
replaces the reservation with what the call cost (:meth:`calls.store.CallStore.settle`), above
the reservation too, so a day's spend can pass the cap and then refuses every further call.
Open calls are kept with the time their media session must be over by, so a call whose end was
never heard (a crash) stops counting on its own.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from store import keys

_ADMIT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = 1
  -- clamped: a concurrent request may have counted a call stamped a moment after `now`
  if oldest[2] then wait = math.min(60, math.max(1, math.ceil(tonumber(oldest[2]) + 60 - now))) end
  return {'calls_per_minute', wait}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {'concurrent_calls', tonumber(ARGV[10])}
end
local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
if spent + tonumber(ARGV[6]) > tonumber(ARGV[5]) then
  return {'daily_spend', tonumber(ARGV[9])}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[2])
redis.call('INCRBY', KEYS[3], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[8])
return {'ok', 0}
"""
#: Retry-After for a tenant at its concurrent-call limit (calls end at unknown times).
CONCURRENT_RETRY_S = 10


@dataclass(frozen=True)
class Limits:
    """A tenant's outbound limits (0 forbids outbound calls)."""

    calls_per_minute: int
    concurrent_calls: int
    daily_spend_cents: int
    #: Restricted destination classes the operator lets the tenant call (routing.destinations).
    allowed_destinations: frozenset[str] = frozenset()

    def as_fields(self) -> dict[str, str]:
        """As fields of the tenant's hash."""
        out = {f"limit_{k}": str(v) for k, v in asdict(self).items() if isinstance(v, int)}
        return out | {"limit_allowed_destinations": ",".join(sorted(self.allowed_destinations))}

    @classmethod
    def from_fields(cls, raw: dict[str, str], default: Limits) -> Limits:
        """From the tenant's hash, each missing field taken from ``default``."""
        values = {
            k: int(raw.get(f"limit_{k}") or v)
            for k, v in asdict(default).items()
            if isinstance(v, int)
        }
        stored = raw.get("limit_allowed_destinations")
        allowed = (
            default.allowed_destinations
            if stored is None
            else frozenset(c for c in stored.split(",") if c)
        )
        return cls(**values, allowed_destinations=allowed)


@dataclass(frozen=True)
class Refused:
    """A call the limits do not allow: which limit, and when to try again."""

    limit: str
    retry_after_s: int


@dataclass(frozen=True)
class Usage:
    """Where a tenant stands against its limits now."""

    calls_last_minute: int
    open_calls: int
    spent_today_cents: int


def day(now: float) -> str:
    """The UTC day of ``now`` (spend is capped per UTC day)."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def _until_midnight(now: float) -> int:
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = (t + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - t).total_seconds()))


class OutboundLimiter:
    """Admits outbound calls against a tenant's :class:`Limits` (Redis keys in ``store.keys``)."""

    def __init__(self, redis: Redis, cents_per_minute: int, longest_call_seconds: int) -> None:
        """Price calls at ``cents_per_minute``; none lasts over ``longest_call_seconds``.

        ``longest_call_seconds`` is the carrier's hard limit on a call: the most it can cost.
        """
        self.redis = redis
        self.cents_per_minute = cents_per_minute
        self.longest_call_seconds = longest_call_seconds
        self._admit = redis.register_script(_ADMIT)

    def reserve_cents(self, cents_per_minute: int | None = None) -> int:
        """What one call reserves of the daily cap: its longest duration at its rate.

        ``cents_per_minute`` is the destination's rate (its class's price); the base rate if
        not given.
        """
        rate = self.cents_per_minute if cents_per_minute is None else cents_per_minute
        return rate * math.ceil(self.longest_call_seconds / 60)

    async def admit(
        self,
        tenant: str,
        call_id: str,
        limits: Limits,
        now: float,
        cents_per_minute: int | None = None,
    ) -> Refused | None:
        """Count ``call_id`` against all three limits, or say which one refuses it.

        The call reserves its longest duration at ``cents_per_minute`` (the base rate if not
        given).
        """
        today = day(now)
        verdict, wait = await self._admit(
            keys=[
                keys.limit_rate(tenant),
                keys.limit_open(tenant),
                keys.limit_spend(tenant, today),
            ],
            args=[
                repr(now),
                call_id,
                limits.calls_per_minute,
                limits.concurrent_calls,
                limits.daily_spend_cents,
                self.reserve_cents(cents_per_minute),
                repr(now + self.longest_call_seconds + 60),
                2 * 86400,
                _until_midnight(now),
                CONCURRENT_RETRY_S,
            ],
        )
        if str(verdict) == "ok":
            return None
        return Refused(str(verdict), int(wait))

    async def release(self, tenant: str, call_id: str, reserved_cents: int, today: str) -> None:
        """Give back what :meth:`admit` counted for ``call_id`` when it will not be placed.

        Its place among the open calls and its reservation of the day's spend (``today``).
        """
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(keys.limit_open(tenant), call_id)
            p.decrby(keys.limit_spend(tenant, today), reserved_cents)
            await p.execute()

    async def usage(self, tenant: str, now: float) -> Usage:
        """The tenant's counters at ``now``."""
        async with self.redis.pipeline(transaction=False) as p:
            p.zcount(keys.limit_rate(tenant), repr(now - 60), "+inf")
            p.zcount(keys.limit_open(tenant), repr(now), "+inf")
            p.get(keys.limit_spend(tenant, day(now)))
            rate, open_, spent = await p.execute()
        return Usage(int(rate), int(open_), int(spent or 0))
