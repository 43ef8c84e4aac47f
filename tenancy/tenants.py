"""Tenants and their API keys: shown once, stored as a hash, with a role, an expiry, a revocation.

A key reads ``bmq_{key_id}_{secret}``: the id finds the record, the secret (32 random bytes) is
compared by its SHA-256 with ``hmac.compare_digest``. A high-entropy secret needs no slow hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from store import keys
from tenancy.errors import LastAdminKey
from tenancy.limits import Limits

_KEY = re.compile(r"^bmq_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


#: Revoke a key unless it is the tenant's last usable admin key. KEYS: the key's hash, the
#: tenant's key set, then the hash of each key in that set (their ids in ARGV[2..], same order).
#: Returns 1 (revoked), 0 (revoked already), -1 (last admin key) or -2 (the set changed: retry).
_REVOKE = """
local revoked = redis.call('HGET', KEYS[1], 'revoked_at')
if revoked and revoked ~= '' then return 0 end
if redis.call('SCARD', KEYS[2]) ~= #ARGV - 1 then return -2 end
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then return -2 end
end
local now = tonumber(ARGV[1])
if redis.call('HGET', KEYS[1], 'role') == 'admin' then
  local others = 0
  for i = 3, #KEYS do
    local k = KEYS[i]
    if k ~= KEYS[1] and redis.call('HGET', k, 'role') == 'admin' then
      local r = redis.call('HGET', k, 'revoked_at')
      local e = redis.call('HGET', k, 'expires_at')
      if (not r or r == '') and (not e or e == '' or tonumber(e) > now) then
        others = others + 1
      end
    end
  end
  if others == 0 then return -1 end
end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""
_SET_CHANGED = -2


class Role(StrEnum):
    """What a key may do: admins manage keys, editors change configuration, viewers read."""

    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"


RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Tenant:
    """A professional customer of the operator."""

    tenant_id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class ApiKey:
    """A key's record (never its secret)."""

    key_id: str
    tenant_id: str
    role: Role
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        """Not revoked and not expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> ApiKey:
        """Parse a key hash."""

        def opt(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            raw["key_id"],
            raw["tenant_id"],
            Role(raw["role"]),
            float(raw["created_at"]),
            opt("expires_at"),
            opt("revoked_at"),
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_key(
    tenant_id: str, role: Role, now: float, expires_at: float | None
) -> tuple[ApiKey, str, dict[str, str]]:
    """A key's record, its raw value, and the hash stored for it (the secret's digest only)."""
    key = ApiKey(secrets.token_hex(8), tenant_id, role, now, expires_at)
    secret = secrets.token_urlsafe(32)
    record = {
        "key_id": key.key_id,
        "tenant_id": tenant_id,
        "role": str(role),
        "created_at": str(now),
        "digest": _digest(secret),
        "expires_at": str(expires_at) if expires_at else "",
    }
    return key, f"bmq_{key.key_id}_{secret}", record


class TenantStore:
    """Tenants and keys in Redis (layout in :mod:`store.keys`)."""

    def __init__(self, redis: Redis) -> None:
        """Use ``redis`` (decode_responses=True)."""
        self.redis = redis

    async def create_tenant(
        self, name: str, now: float, limits: Limits | None = None
    ) -> tuple[Tenant, str]:
        """A new tenant and the raw value of its first admin key (shown once).

        The tenant, its listing and its first key are written in one MULTI/EXEC.
        """
        if not name.strip() or len(name) > 200:
            raise ValueError("a tenant needs a name of 1-200 characters")
        tenant = Tenant("ten_" + secrets.token_hex(8), name.strip(), now)
        record = {"tenant_id": tenant.tenant_id, "name": tenant.name, "created_at": str(now)}
        if limits is not None:
            record |= limits.as_fields()
        key, raw, key_record = _new_key(tenant.tenant_id, Role.ADMIN, now, None)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.tenant(tenant.tenant_id), mapping=keys.fields(record))
            p.sadd(keys.tenants(), tenant.tenant_id)
            p.hset(keys.api_key(key.key_id), mapping=keys.fields(key_record))
            p.sadd(keys.tenant_keys(tenant.tenant_id), key.key_id)
            await p.execute()
        return tenant, raw

    async def limits(self, tenant_id: str, default: Limits) -> Limits:
        """The tenant's outbound limits (``default`` for any it has not been given)."""
        return Limits.from_fields(
            keys.strs(await self.redis.hgetall(keys.tenant(tenant_id))), default
        )

    async def set_limits(self, tenant_id: str, limits: Limits) -> bool:
        """Give the tenant its own limits; ``False`` if there is no such tenant."""
        if not await self.redis.exists(keys.tenant(tenant_id)):
            return False
        await self.redis.hset(keys.tenant(tenant_id), mapping=keys.fields(limits.as_fields()))
        return True

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """A tenant, or ``None``."""
        raw = keys.strs(await self.redis.hgetall(keys.tenant(tenant_id)))
        if not raw:
            return None
        return Tenant(raw["tenant_id"], raw["name"], float(raw["created_at"]))

    async def create_key(
        self, tenant_id: str, role: Role, now: float, expires_at: float | None = None
    ) -> tuple[ApiKey, str]:
        """A new key of ``role``; its record and its raw value (the only time it is seen)."""
        key, raw, record = _new_key(tenant_id, role, now, expires_at)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.api_key(key.key_id), mapping=keys.fields(record))
            p.sadd(keys.tenant_keys(tenant_id), key.key_id)
            await p.execute()
        return key, raw

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's keys, oldest first."""
        out = []
        for key_id in await self.redis.smembers(keys.tenant_keys(tenant_id)):
            raw = keys.strs(await self.redis.hgetall(keys.api_key(str(key_id))))
            if raw:
                out.append(ApiKey.from_redis(raw))
        return sorted(out, key=lambda k: k.created_at)

    async def get_key(self, tenant_id: str, key_id: str) -> ApiKey | None:
        """The tenant's key ``key_id``; ``None`` also when it belongs to another tenant."""
        raw = keys.strs(await self.redis.hgetall(keys.api_key(key_id)))
        if not raw or raw["tenant_id"] != tenant_id:
            return None
        return ApiKey.from_redis(raw)

    async def revoke_key(self, tenant_id: str, key_id: str, now: float) -> ApiKey | None:
        """Revoke the tenant's key; ``None`` if it is not the tenant's.

        The tenant's last usable admin key cannot be revoked (:class:`LastAdminKey`): the
        check and the revocation are one Lua script, so two admins revoking each other at
        once cannot lock the tenant out.
        """
        key = await self.get_key(tenant_id, key_id)
        if key is None:
            return None
        done = _SET_CHANGED
        while done == _SET_CHANGED:  # a key of the tenant was created or removed meanwhile
            ids = sorted(map(str, await self.redis.smembers(keys.tenant_keys(tenant_id))))
            done = int(
                await self.redis.eval(
                    _REVOKE,
                    2 + len(ids),
                    keys.api_key(key_id),
                    keys.tenant_keys(tenant_id),
                    *map(keys.api_key, ids),
                    str(now),
                    *ids,
                )
            )
        if done < 0:
            raise LastAdminKey("this is the tenant's last usable admin key: create another first")
        return await self.get_key(tenant_id, key_id)

    async def authenticate(self, raw_key: str, now: float) -> ApiKey | None:
        """The usable key ``raw_key`` stands for, or ``None``."""
        m = _KEY.match(raw_key)
        if not m:
            return None
        key_id, secret = m.groups()
        raw = keys.strs(await self.redis.hgetall(keys.api_key(key_id)))
        if not raw or not hmac.compare_digest(raw.get("digest", ""), _digest(secret)):
            return None
        key = ApiKey.from_redis(raw)
        return key if key.usable(now) else None


@dataclass(frozen=True)
class Caller:
    """The authenticated tenant key behind a request, and where it came from."""

    key: ApiKey
    address: str
    request_id: str

    @property
    def tenant_id(self) -> str:
        """The caller's tenant."""
        return self.key.tenant_id
