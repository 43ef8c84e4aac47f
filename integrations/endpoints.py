"""Each tenant's webhook endpoints: URL and secret sealed, events subscribed, health.

An endpoint's URL may carry the customer's token in its query string, and its secret signs
what the platform sends: both are kept sealed under the tenant's key. An endpoint whose
deliveries have all failed for the retry window is disabled, with the reason kept for the
tenant's admins; enabling it again clears the reason.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from integrations.errors import EndpointNotFound
from integrations.sealed import Sealer
from integrations.signing import new_secret
from store import keys

#: The events an endpoint may subscribe to.
EVENTS = ("call.started", "call.ended", "call.transferred", "recording.ready", "call.voicemail")
MAX_ENDPOINTS = 20
#: A failed delivery: the endpoint's first failure noted; disabled (once) past the window.
_FAILED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'failing_since', ARGV[1])
if redis.call('HGET', KEYS[1], 'enabled') ~= '1' then return 0 end
local since = tonumber(redis.call('HGET', KEYS[1], 'failing_since'))
if tonumber(ARGV[1]) - since < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'enabled', '0', 'disabled_at', ARGV[1], 'disabled_reason', ARGV[3])
return 1
"""


def new_endpoint_id() -> str:
    """A fresh endpoint id."""
    return "whe_" + secrets.token_hex(8)


@dataclass(frozen=True)
class Endpoint:
    """A tenant's webhook endpoint (its URL opened; its secret never in this record)."""

    endpoint_id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    description: str
    enabled: bool
    created_at: float
    updated_at: float
    secret_created_at: float
    disabled_reason: str | None = None
    disabled_at: float | None = None
    failing_since: float | None = None

    def wants(self, event: str) -> bool:
        """Whether a delivery of ``event`` is due to this endpoint."""
        return self.enabled and event in self.events


def _opt(raw: dict[str, str], name: str) -> float | None:
    return float(raw[name]) if raw.get(name) else None


class Endpoints:
    """Reads and writes the tenants' webhook endpoints."""

    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        """Store in ``redis``; URLs and secrets sealed by ``sealer``."""
        self.redis = redis
        self.sealer = sealer
        self._failed = redis.register_script(_FAILED)

    async def _seal(self, tenant: str, endpoint_id: str, kind: str, value: str) -> str:
        return await self.sealer.seal(tenant, endpoint_id, kind, value.encode())

    async def create(
        self, tenant: str, url: str, events: Iterable[str], description: str, enabled: bool
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret in clear (to be shown once)."""
        endpoint_id, secret, now = new_endpoint_id(), new_secret(), time.time()
        fields = {
            "endpoint_id": endpoint_id,
            "tenant": tenant,
            "url": await self._seal(tenant, endpoint_id, "webhook-url", url),
            "secret": await self._seal(tenant, endpoint_id, "webhook-secret", secret),
            "events": ",".join(dict.fromkeys(events)),
            "description": description,
            "enabled": "1" if enabled else "0",
            "created_at": str(now),
            "updated_at": str(now),
            "secret_created_at": str(now),
        }
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.webhook_endpoint(tenant, endpoint_id), mapping=keys.fields(fields))
            p.sadd(keys.webhook_endpoints(tenant), endpoint_id)
            await p.execute()
        return await self.get(tenant, endpoint_id), secret

    async def count(self, tenant: str) -> int:
        """How many endpoints the tenant has."""
        return int(await self.redis.scard(keys.webhook_endpoints(tenant)))

    async def get(self, tenant: str, endpoint_id: str) -> Endpoint:
        """The tenant's endpoint; :class:`EndpointNotFound` (another tenant's too)."""
        raw = keys.strs(await self.redis.hgetall(keys.webhook_endpoint(tenant, endpoint_id)))
        if not raw or raw.get("tenant") != tenant or "url" not in raw:
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id!r}")
        url = await self.sealer.open(tenant, endpoint_id, "webhook-url", raw["url"])
        return Endpoint(
            endpoint_id=endpoint_id,
            tenant=tenant,
            url=url.decode(),
            events=tuple(e for e in raw.get("events", "").split(",") if e),
            description=raw.get("description", ""),
            enabled=raw.get("enabled") == "1",
            created_at=float(raw["created_at"]),
            updated_at=float(raw.get("updated_at") or raw["created_at"]),
            secret_created_at=float(raw.get("secret_created_at") or raw["created_at"]),
            disabled_reason=raw.get("disabled_reason") or None,
            disabled_at=_opt(raw, "disabled_at"),
            failing_since=_opt(raw, "failing_since"),
        )

    async def of_tenant(self, tenant: str) -> list[Endpoint]:
        """The tenant's endpoints, oldest first."""
        ids = sorted(str(i) for i in await self.redis.smembers(keys.webhook_endpoints(tenant)))
        out = []
        for endpoint_id in ids:
            try:
                out.append(await self.get(tenant, endpoint_id))
            except EndpointNotFound:
                continue
        return sorted(out, key=lambda e: e.created_at)

    async def update(
        self,
        tenant: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Endpoint:
        """Change some fields; enabling clears the reason it was disabled and its failures."""
        current = await self.get(tenant, endpoint_id)
        key = keys.webhook_endpoint(tenant, endpoint_id)
        fields: dict[str, str] = {"updated_at": str(time.time())}
        if url is not None:
            fields["url"] = await self._seal(tenant, endpoint_id, "webhook-url", url)
        if events is not None:
            fields["events"] = ",".join(dict.fromkeys(events))
        if description is not None:
            fields["description"] = description
        async with self.redis.pipeline(transaction=True) as p:
            if enabled is not None:
                fields["enabled"] = "1" if enabled else "0"
                if enabled and not current.enabled:
                    p.hdel(key, "disabled_reason", "disabled_at", "failing_since")
            p.hset(key, mapping=keys.fields(fields))
            await p.execute()
        return await self.get(tenant, endpoint_id)

    async def delete(self, tenant: str, endpoint_id: str) -> None:
        """Remove an endpoint (its pending deliveries fail at their next attempt)."""
        await self.get(tenant, endpoint_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.webhook_endpoint(tenant, endpoint_id))
            p.srem(keys.webhook_endpoints(tenant), endpoint_id)
            await p.execute()

    async def forget_tenant(self, tenant: str) -> None:
        """Delete every endpoint of the tenant (offboarding)."""
        ids = [str(i) for i in await self.redis.smembers(keys.webhook_endpoints(tenant))]
        doomed = [keys.webhook_endpoint(tenant, i) for i in ids]
        await self.redis.delete(keys.webhook_endpoints(tenant), *doomed)

    async def rotate_secret(self, tenant: str, endpoint_id: str) -> str:
        """A new secret for the endpoint, in clear (to be shown once); the old one stops."""
        await self.get(tenant, endpoint_id)
        secret = new_secret()
        sealed = await self._seal(tenant, endpoint_id, "webhook-secret", secret)
        await self.redis.hset(
            keys.webhook_endpoint(tenant, endpoint_id),
            mapping={"secret": sealed, "secret_created_at": str(time.time())},
        )
        return secret

    async def secret(self, tenant: str, endpoint_id: str) -> str:
        """The endpoint's secret in clear, to sign a delivery."""
        sealed = await self.redis.hget(keys.webhook_endpoint(tenant, endpoint_id), "secret")
        if not sealed:
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id!r}")
        opened = await self.sealer.open(tenant, endpoint_id, "webhook-secret", str(sealed))
        return opened.decode()

    async def subscribed(self, tenant: str, event: str) -> list[str]:
        """The ids of the tenant's enabled endpoints subscribed to ``event`` (nothing opened)."""
        out = []
        ids = sorted(map(str, await self.redis.smembers(keys.webhook_endpoints(tenant))))
        for endpoint_id in ids:
            enabled, events = await self.redis.hmget(
                keys.webhook_endpoint(tenant, endpoint_id), ["enabled", "events"]
            )
            if enabled == "1" and event in str(events or "").split(","):
                out.append(endpoint_id)
        return out

    async def succeeded(self, tenant: str, endpoint_id: str) -> None:
        """A delivery reached the endpoint: it is not failing."""
        await self.redis.hdel(keys.webhook_endpoint(tenant, endpoint_id), "failing_since")

    async def failed(
        self, tenant: str, endpoint_id: str, now: float, window_s: float, reason: str
    ) -> bool:
        """A delivery failed; ``True`` when this disabled the endpoint (failing ``window_s``).

        One Lua script: of two processes failing at once, one disables it (and audits).
        """
        why = f"every delivery failed for {window_s / 3600:g} h; last: {reason}"
        got = await self._failed(
            keys=[keys.webhook_endpoint(tenant, endpoint_id)], args=[now, window_s, why]
        )
        return bool(int(got))
