"""Each tenant's tool-signing secret: made only by the API, kept sealed in Redis.

The secret is shown to the customer once, when the API creates or rotates it; afterwards only
whether it exists and when it was made are told. HTTP tools need it: an agent cannot be given
one before it exists, and a tool is not called without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from integrations.sealed import Sealer
from integrations.signing import new_secret
from store import keys

_KIND = "tools-secret"


@dataclass(frozen=True)
class SecretInfo:
    """What may be told about a secret after its creation."""

    exists: bool
    created_at: float | None = None


class ToolSecrets:
    """The tenants' secrets that sign requests of HTTP tools."""

    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        """Store in ``redis``, sealed by ``sealer``."""
        self.redis = redis
        self.sealer = sealer

    async def current(self, tenant: str) -> str | None:
        """The tenant's secret in clear; ``None`` when it has none (never made here)."""
        sealed = await self.redis.hget(keys.tools_secret(tenant), "secret")
        if not sealed:
            return None
        return (await self.sealer.open(tenant, tenant, _KIND, str(sealed))).decode()

    async def rotate(self, tenant: str, now: float) -> tuple[str, float]:
        """A new secret replacing the tenant's (or its first): (secret, created_at)."""
        secret = new_secret()
        sealed = await self.sealer.seal(tenant, tenant, _KIND, secret.encode())
        await self.redis.hset(
            keys.tools_secret(tenant), mapping={"secret": sealed, "created_at": str(now)}
        )
        return secret, now

    async def forget(self, tenant: str) -> None:
        """Delete the tenant's secret (offboarding)."""
        await self.redis.delete(keys.tools_secret(tenant))

    async def info(self, tenant: str) -> SecretInfo:
        """Whether the tenant has a secret, and since when."""
        created = await self.redis.hget(keys.tools_secret(tenant), "created_at")
        return SecretInfo(True, float(created)) if created else SecretInfo(False)
