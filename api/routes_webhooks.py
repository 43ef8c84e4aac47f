"""``/v1/webhooks`` (endpoints, deliveries, replay) and ``/v1/tools/secret``.

Endpoints and secrets are an admin's to change; any key of the tenant reads them (a secret is
shown only in the response that creates or rotates it). Every change is audited, with the
URL's host only: a query string may hold the customer's token.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException

from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem
from api.schema import URL_PATTERN
from api.write_limits import write_limit
from integrations.egress import Egress
from integrations.endpoints import MAX_ENDPOINTS, Endpoint, Endpoints
from integrations.errors import (
    DeliveryInFlight,
    DeliveryNotFound,
    EgressRefused,
    EndpointNotFound,
)
from integrations.outbox import Attempt, Delivery, Outbox
from integrations.secrets import ToolSecrets
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter

EventName = Literal[
    "call.started", "call.ended", "call.transferred", "recording.ready", "call.voicemail"
]
Url = Annotated[str, Field(min_length=10, max_length=2048, pattern=URL_PATTERN)]
Absent = SkipJsonSchema[None]
#: The shapes of the ids the platform makes (integrations/endpoints.py, outbox.py).
ENDPOINT_ID = r"^whe_[0-9a-f]{16}$"
DELIVERY_ID = r"^dlv_[0-9a-f]{20}$"
EndpointId = Annotated[str, Path(pattern=ENDPOINT_ID)]
DeliveryId = Annotated[str, Path(pattern=DELIVERY_ID)]


def _ts(at: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(at, dt.UTC) if at is not None else None


class EndpointFields(BaseModel):
    """A webhook endpoint as the customer sets it."""

    model_config = ConfigDict(extra="ignore")
    url: Url = Field(description="Where deliveries are POSTed (https outside development)")
    events: list[EventName] = Field(min_length=1, max_length=5)
    description: str = Field(default="", max_length=256)
    enabled: StrictBool = True


class EndpointPatch(BaseModel):
    """Fields to change; absent ones stay. ``enabled: true`` re-enables a disabled endpoint."""

    model_config = ConfigDict(extra="ignore")
    url: Url | Absent = None
    events: Annotated[list[EventName], Field(min_length=1, max_length=5)] | Absent = None
    description: Annotated[str, Field(max_length=256)] | Absent = None
    enabled: StrictBool | Absent = None


class EndpointOut(BaseModel):
    """A webhook endpoint (never its secret)."""

    endpoint_id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why the platform disabled it, if it did")
    disabled_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    secret_created_at: dt.datetime

    @classmethod
    def of(cls, e: Endpoint) -> EndpointOut:
        """From the stored endpoint."""
        return cls(
            endpoint_id=e.endpoint_id,
            url=e.url,
            events=list(e.events),
            description=e.description,
            enabled=e.enabled,
            disabled_reason=e.disabled_reason,
            disabled_at=_ts(e.disabled_at),
            created_at=dt.datetime.fromtimestamp(e.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(e.updated_at, dt.UTC),
            secret_created_at=dt.datetime.fromtimestamp(e.secret_created_at, dt.UTC),
        )


class EndpointCreated(EndpointOut):
    """An endpoint just created: the only response besides a rotation with its secret."""

    secret: str = Field(description="whsec_...: verifies deliveries; shown once")


class EndpointList(BaseModel):
    """The tenant's webhook endpoints."""

    items: list[EndpointOut]


class SecretRotated(BaseModel):
    """A new signing secret, shown once."""

    secret: str
    created_at: dt.datetime


class ToolSecretOut(BaseModel):
    """Whether the tenant's tool-signing secret exists (never its value)."""

    exists: bool
    created_at: dt.datetime | None


class DeliveryOut(BaseModel):
    """A webhook delivery (never its payload)."""

    delivery_id: str
    endpoint_id: str
    event: str
    call_id: str
    webhook_id: str = Field(description="The webhook-id header: the same on every attempt")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: dt.datetime | None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        """From the stored delivery."""
        return cls(
            delivery_id=d.delivery_id,
            endpoint_id=d.endpoint_id,
            event=d.event,
            call_id=d.call_id,
            webhook_id=d.webhook_id,
            status=d.status,  # type: ignore[arg-type]
            attempts=d.attempts,
            created_at=dt.datetime.fromtimestamp(d.created_at, dt.UTC),
            next_attempt_at=_ts(d.next_attempt_at),
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            delivered_at=_ts(d.delivered_at),
        )


class AttemptOut(BaseModel):
    """One attempt of a delivery."""

    at: dt.datetime
    status_code: int | None
    error: str | None
    duration_s: float

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        """From the stored attempt."""
        return cls(
            at=dt.datetime.fromtimestamp(a.at, dt.UTC),
            status_code=a.status_code,
            error=a.error,
            duration_s=a.duration_s,
        )


class DeliveryDetail(DeliveryOut):
    """A delivery with each of its attempts."""

    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    """Deliveries, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[DeliveryOut]
    next_cursor: str | None


def router(
    *,
    tenants: TenantStore,
    audit: AuditLog,
    writes: WriteLimiter,
    endpoints: Endpoints,
    outbox: Outbox,
    tool_secrets: ToolSecrets,
    egress: Egress,
) -> APIRouter:
    """The webhook and tool-secret routes; URLs checked by ``egress``'s rules when set."""
    r = APIRouter(prefix="/v1", responses=API_ERRORS)
    as_admin = tenant_key(tenants, Role.ADMIN)
    admin = Depends(as_admin)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    limited = write_limit(writes, as_admin)

    def check(url: str) -> None:
        try:
            egress.check_url(url)
        except EgressRefused as e:
            raise ApiProblem(422, e.code, f"url: {e}") from e

    async def find(caller: Caller, endpoint_id: str) -> Endpoint:
        try:
            return await endpoints.get(caller.tenant_id, endpoint_id)
        except EndpointNotFound as e:
            raise HTTPException(404, "no such webhook endpoint") from e

    @r.post(
        "/webhooks/endpoints",
        status_code=201,
        response_model=EndpointCreated,
        tags=["webhooks"],
        dependencies=[limited],
    )
    async def create_endpoint(body: EndpointFields, caller: Caller = admin) -> EndpointCreated:
        """Add an endpoint; its signing secret is in this response only."""
        check(body.url)
        if await endpoints.count(caller.tenant_id) >= MAX_ENDPOINTS:
            raise ApiProblem(409, "too_many_endpoints", f"at most {MAX_ENDPOINTS} endpoints")
        made, secret = await endpoints.create(
            caller.tenant_id, body.url, body.events, body.description, body.enabled
        )
        await audit.record(
            caller,
            "webhook_endpoint.create",
            made.endpoint_id,
            host=urlsplit(body.url).hostname or "",
            events=list(made.events),
        )
        return EndpointCreated(**EndpointOut.of(made).model_dump(), secret=secret)

    @r.get("/webhooks/endpoints", response_model=EndpointList, tags=["webhooks"])
    async def list_endpoints(caller: Caller = viewer) -> EndpointList:
        """Your tenant's endpoints (never their secrets)."""
        return EndpointList(
            items=[EndpointOut.of(e) for e in await endpoints.of_tenant(caller.tenant_id)]
        )

    @r.get("/webhooks/endpoints/{endpoint_id}", response_model=EndpointOut, tags=["webhooks"])
    async def read_endpoint(endpoint_id: EndpointId, caller: Caller = viewer) -> EndpointOut:
        """One endpoint; ``disabled_reason`` says why the platform disabled it."""
        return EndpointOut.of(await find(caller, endpoint_id))

    @r.patch(
        "/webhooks/endpoints/{endpoint_id}",
        response_model=EndpointOut,
        tags=["webhooks"],
        dependencies=[limited],
    )
    async def update_endpoint(
        endpoint_id: EndpointId, body: EndpointPatch, caller: Caller = admin
    ) -> EndpointOut:
        """Change an endpoint; ``enabled: true`` clears the reason it was disabled."""
        await find(caller, endpoint_id)
        changes = body.model_dump(exclude_unset=True)
        nulls = sorted(k for k, v in changes.items() if v is None)
        if nulls:
            raise HTTPException(422, f"these fields cannot be null: {', '.join(nulls)}")
        if body.url is not None:
            check(body.url)
        updated = await endpoints.update(
            caller.tenant_id,
            endpoint_id,
            url=body.url,
            events=body.events,
            description=body.description,
            enabled=body.enabled,
        )
        detail: dict[str, object] = {"fields": sorted(changes)}
        if body.url is not None:
            detail["host"] = urlsplit(body.url).hostname or ""
        await audit.record(caller, "webhook_endpoint.update", endpoint_id, **detail)
        return EndpointOut.of(updated)

    @r.delete(
        "/webhooks/endpoints/{endpoint_id}",
        status_code=204,
        tags=["webhooks"],
        dependencies=[limited],
    )
    async def delete_endpoint(endpoint_id: EndpointId, caller: Caller = admin) -> Response:
        """Remove an endpoint (its pending deliveries fail)."""
        await find(caller, endpoint_id)
        await endpoints.delete(caller.tenant_id, endpoint_id)
        await audit.record(caller, "webhook_endpoint.delete", endpoint_id)
        return Response(status_code=204)

    @r.post(
        "/webhooks/endpoints/{endpoint_id}/rotate-secret",
        response_model=SecretRotated,
        tags=["webhooks"],
        dependencies=[limited],
    )
    async def rotate_endpoint_secret(
        endpoint_id: EndpointId, caller: Caller = admin
    ) -> SecretRotated:
        """A new signing secret for the endpoint, in this response only; the old one stops."""
        await find(caller, endpoint_id)
        secret = await endpoints.rotate_secret(caller.tenant_id, endpoint_id)
        await audit.record(caller, "webhook_endpoint.rotate_secret", endpoint_id)
        rotated = await find(caller, endpoint_id)
        return SecretRotated(
            secret=secret, created_at=dt.datetime.fromtimestamp(rotated.secret_created_at, dt.UTC)
        )

    @r.get("/webhooks/deliveries", response_model=DeliveryPage, tags=["webhooks"])
    async def list_deliveries(
        caller: Caller = viewer,
        endpoint_id: Annotated[str | None, Query(pattern=ENDPOINT_ID)] = None,
        status: Literal["pending", "delivered", "failed"] | None = None,
        cursor: Annotated[str | None, Query(pattern=r"^\d{1,12}(\.\d{1,20})?$")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> DeliveryPage:
        """Your tenant's deliveries, newest first, by endpoint and status."""
        before = float(cursor) if cursor else None
        items = await outbox.page(
            caller.tenant_id, endpoint_id=endpoint_id, status=status, before=before, limit=limit
        )
        more = len(items) == limit
        return DeliveryPage(
            items=[DeliveryOut.of(d) for d in items],
            next_cursor=repr(items[-1].created_at) if more else None,
        )

    async def find_delivery(caller: Caller, delivery_id: str) -> Delivery:
        try:
            return await outbox.get(caller.tenant_id, delivery_id)
        except DeliveryNotFound as e:
            raise HTTPException(404, "no such delivery") from e

    @r.get("/webhooks/deliveries/{delivery_id}", response_model=DeliveryDetail, tags=["webhooks"])
    async def read_delivery(delivery_id: DeliveryId, caller: Caller = viewer) -> DeliveryDetail:
        """One delivery: its state and each attempt (time, status code, error)."""
        d = await find_delivery(caller, delivery_id)
        attempts = [AttemptOut.of(a) for a in await outbox.attempts(delivery_id)]
        return DeliveryDetail(**DeliveryOut.of(d).model_dump(), attempt_log=attempts)

    @r.post(
        "/webhooks/deliveries/{delivery_id}/replay",
        status_code=202,
        response_model=DeliveryOut,
        tags=["webhooks"],
        dependencies=[limited],
    )
    async def replay_delivery(delivery_id: DeliveryId, caller: Caller = admin) -> DeliveryOut:
        """Send a delivery again: the same payload and ``webhook-id``, retried as a new one."""
        d = await find_delivery(caller, delivery_id)
        try:
            endpoint = await endpoints.get(caller.tenant_id, d.endpoint_id)
        except EndpointNotFound as e:
            raise ApiProblem(409, "endpoint_deleted", "the delivery's endpoint is gone") from e
        if not endpoint.enabled:
            raise ApiProblem(409, "endpoint_disabled", "enable the endpoint before replaying to it")
        try:
            replayed = await outbox.replay(caller.tenant_id, delivery_id)
        except DeliveryNotFound as e:
            raise HTTPException(404, "no such delivery") from e
        except DeliveryInFlight as e:
            raise ApiProblem(409, e.code, str(e)) from e
        await audit.record(caller, "webhook_delivery.replay", delivery_id)
        return DeliveryOut.of(replayed)

    @r.get("/tools/secret", response_model=ToolSecretOut, tags=["tools"])
    async def read_tool_secret(caller: Caller = viewer) -> ToolSecretOut:
        """Whether your tenant's tool-signing secret exists, and since when (never its value)."""
        info = await tool_secrets.info(caller.tenant_id)
        return ToolSecretOut(exists=info.exists, created_at=_ts(info.created_at))

    @r.post(
        "/tools/secret",
        status_code=201,
        response_model=SecretRotated,
        tags=["tools"],
        dependencies=[limited],
    )
    async def rotate_tool_secret(caller: Caller = admin) -> SecretRotated:
        """Create or rotate the secret that signs your HTTP tools' requests (shown once)."""
        secret, at = await tool_secrets.rotate(caller.tenant_id, time.time())
        await audit.record(caller, "tools_secret.rotate", caller.tenant_id)
        return SecretRotated(secret=secret, created_at=dt.datetime.fromtimestamp(at, dt.UTC))

    return r


__all__ = ["router"]
