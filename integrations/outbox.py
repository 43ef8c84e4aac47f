"""The webhook outbox: one delivery per subscribed endpoint, queued in Redis, sealed.

:meth:`Outbox.emit` writes, for each of the tenant's enabled endpoints subscribed to the
event, a delivery hash (``delivery:{id}``: its stable ``webhook-id``, the event's data sealed
under the tenant's key, its state) and its due time in ``deliveries:due``; the worker
(``integrations/delivery.py``) sends it. Reads, listing, replay and erasure (a call's
deliveries, a tenant's) are here too.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from integrations.endpoints import Endpoints
from integrations.errors import DeliveryInFlight, DeliveryNotFound
from integrations.sealed import Sealer
from integrations.signing import new_message_id
from store import keys

log = logging.getLogger(__name__)
DATA_KIND = "webhook-data"
PAYLOAD_KIND = "webhook-payload"
STATUSES = ("pending", "delivered", "failed")
#: Replay: refused (-1) while an attempt holds the lease (its end is the due time, later than
#: now), missing (0) if not the tenant's; else due now, a stale lease's token dropped.
_REPLAY = """
local tenant = redis.call('HGET', KEYS[2], 'tenant')
if not tenant or tenant ~= ARGV[2] then return 0 end
local token = redis.call('HGET', KEYS[2], 'lease_token')
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if token and token ~= '' and due and tonumber(due) > tonumber(ARGV[3]) then return -1 end
redis.call('HDEL', KEYS[2], 'lease_token')
redis.call('HSET', KEYS[2], 'status', 'pending', 'first_attempt_at', '', 'next_attempt_at', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[4])
return 1
"""


def new_delivery_id() -> str:
    """A fresh delivery id."""
    return "dlv_" + secrets.token_hex(10)


@dataclass(frozen=True)
class Attempt:
    """One try of a delivery: when, what the endpoint answered, what went wrong."""

    at: float
    status_code: int | None
    error: str | None
    duration_s: float


@dataclass(frozen=True)
class Delivery:
    """A delivery's state (never its payload)."""

    delivery_id: str
    tenant: str
    endpoint_id: str
    event: str
    call_id: str
    webhook_id: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: float | None

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Delivery:
        """From a delivery hash."""

        def opt(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            delivery_id=raw["delivery_id"],
            tenant=raw["tenant"],
            endpoint_id=raw["endpoint_id"],
            event=raw["event"],
            call_id=raw.get("call_id", ""),
            webhook_id=raw["webhook_id"],
            status=raw.get("status", "pending"),
            attempts=int(raw.get("attempts") or 0),
            created_at=float(raw["created_at"]),
            next_attempt_at=opt("next_attempt_at") if raw.get("status") == "pending" else None,
            last_status_code=int(raw["last_status_code"]) if raw.get("last_status_code") else None,
            last_error=raw.get("last_error") or None,
            delivered_at=opt("delivered_at"),
        )


class Outbox:
    """Queues webhook deliveries and reads them back (one for the process)."""

    def __init__(
        self,
        redis: Redis,
        endpoints: Endpoints,
        sealer: Sealer,
        *,
        delays: Mapping[str, float] | None = None,
        keep_s: float = 7 * 24 * 3600.0,
        window_s: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Queue in ``redis``; ``delays``: seconds an event's first attempt waits (per event).

        A finished delivery is kept ``keep_s`` (the worker expires it), and listed as long;
        ``window_s`` is how long it may be retried (its call's index outlives both).
        """
        self.redis = redis
        self.endpoints = endpoints
        self.sealer = sealer
        self.delays = dict(delays or {})
        self.keep_s = keep_s
        #: A call's index of deliveries lasts longer than any of them (erasure finds them all).
        self.index_s = int(keep_s + window_s + 24 * 3600)
        self._clock = clock
        self._replay = redis.register_script(_REPLAY)

    async def emit(self, tenant: str, event: str, call_id: str, data: Mapping[str, Any]) -> None:
        """Queue ``event`` for each endpoint of ``tenant`` subscribed to it; never raises."""
        try:
            for endpoint_id in await self.endpoints.subscribed(tenant, event):
                await self.enqueue(tenant, endpoint_id, event, call_id, data)
        except Exception:  # the call goes on; the event is lost and logged
            log.exception("webhook event not queued", extra={"call_id": call_id, "event": event})

    async def enqueue(
        self, tenant: str, endpoint_id: str, event: str, call_id: str, data: Mapping[str, Any]
    ) -> str:
        """One delivery of ``event`` to an endpoint; its id."""
        now = self._clock()
        delivery_id = new_delivery_id()
        due = now + self.delays.get(event, 0.0)
        sealed = await self.sealer.seal(
            tenant, delivery_id, DATA_KIND, json.dumps(dict(data), default=str).encode()
        )
        fields = {
            "delivery_id": delivery_id,
            "tenant": tenant,
            "endpoint_id": endpoint_id,
            "event": event,
            "call_id": call_id,
            "webhook_id": new_message_id(),
            "status": "pending",
            "attempts": "0",
            "created_at": str(now),
            "next_attempt_at": str(due),
            "data": sealed,
        }
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.delivery(delivery_id), mapping=keys.fields(fields))
            p.zadd(keys.tenant_deliveries(tenant), {delivery_id: now})
            # Listed while kept (a pending delivery lasts the retry window, far less).
            p.zremrangebyscore(keys.tenant_deliveries(tenant), "-inf", now - self.keep_s)
            p.zadd(keys.deliveries_due(), {delivery_id: due})
            p.sadd(keys.call_deliveries(call_id), delivery_id)
            p.expire(keys.call_deliveries(call_id), self.index_s)
            await p.execute()
        log.info(
            "webhook queued",
            extra={"call_id": call_id, "event": event, "delivery_id": delivery_id},
        )
        return delivery_id

    async def get(self, tenant: str, delivery_id: str) -> Delivery:
        """The tenant's delivery; :class:`DeliveryNotFound` (another tenant's too)."""
        raw = keys.strs(await self.redis.hgetall(keys.delivery(delivery_id)))
        if not raw or raw.get("tenant") != tenant:
            raise DeliveryNotFound(f"no delivery {delivery_id!r}")
        return Delivery.from_redis(raw)

    async def attempts(self, delivery_id: str) -> list[Attempt]:
        """A delivery's attempts in order."""
        rows = await self.redis.lrange(keys.delivery_attempts(delivery_id), 0, -1)
        return [Attempt(**json.loads(r)) for r in rows]

    async def page(
        self,
        tenant: str,
        *,
        endpoint_id: str | None,
        status: str | None,
        before: float | None,
        limit: int,
    ) -> list[Delivery]:
        """The tenant's deliveries, newest first, created before ``before``, filtered."""
        out: list[Delivery] = []
        top: str = f"({before!r}" if before is not None else "+inf"
        while len(out) < limit:
            ids = await self.redis.zrevrangebyscore(
                keys.tenant_deliveries(tenant), top, "-inf", start=0, num=limit * 4, withscores=True
            )
            if not ids:
                break
            for delivery_id, score in cast(list[tuple[str, float]], ids):
                top = f"({score!r}"
                raw = keys.strs(await self.redis.hgetall(keys.delivery(str(delivery_id))))
                if not raw or raw.get("tenant") != tenant:
                    continue
                d = Delivery.from_redis(raw)
                if (endpoint_id and d.endpoint_id != endpoint_id) or (
                    status and d.status != status
                ):
                    continue
                out.append(d)
                if len(out) == limit:
                    break
        return out

    async def replay(self, tenant: str, delivery_id: str) -> Delivery:
        """Send the delivery again (same payload, same ``webhook-id``), retried as a new one.

        One Lua script: :class:`DeliveryInFlight` while an attempt holds its lease (that
        attempt's outcome would overwrite the replay), :class:`DeliveryNotFound` if not the
        tenant's.
        """
        now = self._clock()
        got = await self._replay(
            keys=[
                keys.deliveries_due(),
                keys.delivery(delivery_id),
                keys.delivery_attempts(delivery_id),
                keys.call_deliveries(await self._call_of(delivery_id)),
            ],
            args=[delivery_id, tenant, repr(now), self.index_s],
        )
        if int(got) == 0:
            raise DeliveryNotFound(f"no delivery {delivery_id!r}")
        if int(got) < 0:
            raise DeliveryInFlight("the delivery is being attempted now; replay it afterwards")
        return await self.get(tenant, delivery_id)

    async def _call_of(self, delivery_id: str) -> str:
        return str(await self.redis.hget(keys.delivery(delivery_id), "call_id") or "")

    async def forget_call(self, call_id: str) -> None:
        """Delete every delivery about the call (payload, attempts, queue and list entries).

        An attempt in progress finds its lease gone and neither records nor retries anything.
        """
        index = keys.call_deliveries(call_id)
        ids = sorted(map(str, await self.redis.smembers(index)))
        async with self.redis.pipeline(transaction=True) as p:
            for delivery_id in ids:
                p.hget(keys.delivery(delivery_id), "tenant")
            tenants = await p.execute()
        await self._delete([(d, str(t or "")) for d, t in zip(ids, tenants, strict=True)], index)
        if ids:
            log.info("webhook deliveries erased", extra={"call_id": call_id, "count": len(ids)})

    async def forget_tenant(self, tenant: str) -> None:
        """Delete the tenant's deliveries and webhook endpoints (offboarding)."""
        listed = keys.tenant_deliveries(tenant)
        ids = sorted(map(str, await self.redis.zrange(listed, 0, -1)))
        calls = {await self._call_of(delivery_id) for delivery_id in ids}
        indexes = [keys.call_deliveries(c) for c in calls if c]
        await self._delete([(d, tenant) for d in ids], listed, *indexes)
        await self.endpoints.forget_tenant(tenant)

    async def _delete(self, doomed: list[tuple[str, str]], *also: str) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            for delivery_id, tenant in doomed:
                p.delete(keys.delivery(delivery_id), keys.delivery_attempts(delivery_id))
                p.zrem(keys.deliveries_due(), delivery_id)
                if tenant:
                    p.zrem(keys.tenant_deliveries(tenant), delivery_id)
            if also:
                p.delete(*also)
            await p.execute()
