"""Per-tenant rate limit on configuration writes (agents, numbers, keys).

Each agent create or update makes the shared cores synthesize its phrases, so writes are metered
per tenant: a token bucket in Redis (one Lua script, so concurrent requests of one tenant cannot
together pass it) holding ``per_minute`` tokens and refilled at ``per_minute`` a minute. A write
beyond it is refused with 429 ``rate_limited`` and ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from starlette.exceptions import HTTPException

from store import keys
from tenancy.tenants import Caller

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
    """A token bucket per tenant for configuration writes (Redis key ``limits:{tenant}:writes``)."""

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


def rate_limited(retry_after_s: int) -> HTTPException:
    """The 429 ``rate_limited`` problem for a write refused by the limiter."""
    return HTTPException(
        429,
        f"too many configuration writes for this tenant: retry in {retry_after_s} s",
        headers={"Retry-After": str(retry_after_s)},
    )


def write_limit(
    limiter: WriteLimiter, check: Callable[[Request], Awaitable[Caller]]
) -> Any:  # FastAPI's Depends() is typed Any
    """A route dependency that counts the write against the tenant of ``check``'s caller.

    ``check`` is the route's own credentials dependency (FastAPI runs it once per request), so
    an unauthenticated request never uses a tenant's tokens.
    """
    authenticated = Depends(check)

    async def dependency(caller: Caller = authenticated) -> None:
        wait = await limiter.take(caller.tenant_id, time.time())
        if wait is not None:
            raise rate_limited(wait)

    return Depends(dependency)


__all__ = ["WriteLimiter", "rate_limited", "write_limit"]
