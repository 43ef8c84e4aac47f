"""Per-tenant rate limit on configuration writes (agents, numbers, keys).

Each agent create or update makes the shared cores synthesize its phrases, so writes are metered
per tenant: a token bucket in Redis (one Lua script, so concurrent requests of one tenant cannot
together pass it) holding ``per_minute`` tokens and refilled at ``per_minute`` a minute. A write
beyond it is refused (``api/write_limits.py`` answers 429 ``rate_limited`` with ``Retry-After``).
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from store import keys

_TAKE = """
local now = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local per_second = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
-- a clock that went back refills nothing
if now > at then tokens = math.min(capacity, tokens + (now - at) * per_second) end
if tokens < 1 then
  return {0, tostring(math.max(1, math.ceil((1 - tokens) / per_second)))}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', tostring(math.max(now, at)))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / per_second) + 60)
return {1, '0'}
"""


class WriteLimiter:
    """A token bucket per tenant for configuration writes (``keys.limit_writes``)."""

    def __init__(self, redis: Redis, per_minute: int) -> None:
        """Allow a burst of ``per_minute`` writes, refilled at ``per_minute`` a minute."""
        self.per_minute = per_minute
        self._take = redis.register_script(_TAKE)

    async def take(self, tenant: str, now: float) -> int | None:
        """Count one write of ``tenant`` at ``now``: ``None``, or seconds to wait if refused."""
        allowed, wait = await self._take(
            keys=[keys.limit_writes(tenant)],
            args=[repr(now), self.per_minute, repr(self.per_minute / 60.0)],
        )
        return None if int(allowed) else max(1, math.ceil(float(wait)))


__all__ = ["WriteLimiter"]
