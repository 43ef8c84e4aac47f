"""A job that one process of the cluster runs at a time: a Redis key holding its owner's token."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from store import keys

# Extends KEYS[1] by ARGV[2] ms if it still holds ARGV[1] (this owner's token).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Deletes KEYS[1] if it still holds ARGV[1].
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """``lease:{name}``, held by one owner for ``ttl_s`` at a time (renewed while it works)."""

    def __init__(self, redis: Redis, name: str, ttl_s: float, owner: str) -> None:
        """A lease named ``name``; ``owner`` (a node id) is part of the token, for operators."""
        self.redis = redis
        self.key = keys.lease(name)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = f"{owner}:{secrets.token_hex(8)}"
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or renew it if this owner does)."""
        if await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return await self.renew()

    async def renew(self) -> bool:
        """Extend the lease; ``False`` when another owner holds it now."""
        return bool(int(await self._renew(keys=[self.key], args=[self.token, self.ttl_ms])))

    async def release(self) -> None:
        """Give the lease back if this owner still holds it."""
        await self._release(keys=[self.key], args=[self.token])
