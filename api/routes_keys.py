"""``/v1/keys`` (a tenant's admins manage its keys), ``/v1/audit`` and ``/v1/limits``."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem
from api.write_limits import write_limit
from routing.destinations import DestinationClass, DestinationTable, class_price
from tenancy.audit import AuditLog
from tenancy.errors import LastAdminKey
from tenancy.limits import Limits, OutboundLimiter
from tenancy.tenants import ApiKey, Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter


class KeyCreate(BaseModel):
    """A new key: its role, and optionally when it expires."""

    model_config = ConfigDict(extra="ignore")  # server-owned fields sent by a client are ignored
    role: Role
    expires_at: dt.datetime | None = Field(default=None, description="UTC; none: no expiry")


class KeyOut(BaseModel):
    """A key as listed: never its secret."""

    key_id: str
    role: Role
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        """From the stored record."""

        def ts(v: float | None) -> dt.datetime | None:
            return dt.datetime.fromtimestamp(v, dt.UTC) if v is not None else None

        return cls(
            key_id=key.key_id,
            role=key.role,
            created_at=dt.datetime.fromtimestamp(key.created_at, dt.UTC),
            expires_at=ts(key.expires_at),
            revoked_at=ts(key.revoked_at),
        )


class KeyCreated(KeyOut):
    """A key just created: the only response that carries its value."""

    api_key: str


class KeyList(BaseModel):
    """The tenant's keys."""

    items: list[KeyOut]


class AuditOut(BaseModel):
    """One audit entry."""

    id: str
    at: dt.datetime
    key_id: str
    action: str
    target: str
    address: str
    request_id: str


class AuditPage(BaseModel):
    """A page of the audit log; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[AuditOut]
    next_cursor: str | None


class UsageOut(BaseModel):
    """Where the tenant stands now."""

    calls_last_minute: int
    open_calls: int
    spent_today_cents: int


class LimitsOut(BaseModel):
    """The tenant's outbound limits and its use of them."""

    calls_per_minute: int
    concurrent_calls: int
    daily_spend_cents: int
    allowed_destinations: list[DestinationClass] = Field(
        description="Destination classes besides standard this tenant may call"
    )
    cents_per_minute: dict[DestinationClass, int] = Field(
        description="What a minute to each destination class costs against the spend cap"
    )
    cents_reserved_per_call: int
    usage: UsageOut


def router(
    *,
    tenants: TenantStore,
    audit: AuditLog,
    writes: WriteLimiter,
    limiter: OutboundLimiter,
    destinations: DestinationTable,
    default_limits: Limits,
) -> APIRouter:
    """``/v1/keys``, ``/v1/audit`` and ``/v1/limits``.

    ``limiter`` and ``destinations`` price a tenant's outbound calls; ``default_limits`` are
    those of a tenant without its own.
    """
    r = APIRouter(prefix="/v1", responses=API_ERRORS)

    as_admin = tenant_key(tenants, Role.ADMIN)
    admin = Depends(as_admin)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    limited = write_limit(writes, as_admin)

    @r.post(
        "/keys", status_code=201, response_model=KeyCreated, tags=["keys"], dependencies=[limited]
    )
    async def create_key(body: KeyCreate, caller: Caller = admin) -> KeyCreated:
        """Create a key of ``role`` for your tenant; its value is shown in this response only."""
        expires = body.expires_at.timestamp() if body.expires_at else None
        now = time.time()
        if expires is not None and expires <= now:
            raise ApiProblem(422, "expires_in_past", "expires_at must be in the future")
        key, raw = await tenants.create_key(caller.tenant_id, body.role, now, expires)
        await audit.record(caller, "key.create", key.key_id, role=str(body.role))
        return KeyCreated(**KeyOut.of(key).model_dump(), api_key=raw)

    @r.get("/keys", response_model=KeyList, tags=["keys"])
    async def list_keys(caller: Caller = admin) -> KeyList:
        """Your tenant's keys (never their values)."""
        return KeyList(items=[KeyOut.of(k) for k in await tenants.list_keys(caller.tenant_id)])

    @r.delete("/keys/{key_id}", status_code=204, tags=["keys"], dependencies=[limited])
    async def revoke_key(key_id: str, caller: Caller = admin) -> Response:
        """Revoke one of your tenant's keys (at once: it gets 401 from now on)."""
        if key_id == caller.key.key_id:
            raise ApiProblem(409, "own_key", "a key cannot revoke itself: use another admin key")
        try:
            revoked = await tenants.revoke_key(caller.tenant_id, key_id, time.time())
        except LastAdminKey as e:
            raise ApiProblem(409, "last_admin_key", str(e)) from e
        if revoked is None:
            raise HTTPException(404, "no such key")
        await audit.record(caller, "key.revoke", key_id)
        return Response(status_code=204)

    @r.get("/audit", response_model=AuditPage, tags=["audit"])
    async def read_audit(
        caller: Caller = viewer,
        cursor: Annotated[str, Query(pattern=r"^(-|[0-9]{1,19}-[0-9]{1,19})$")] = "-",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> AuditPage:
        """Your tenant's audit log, oldest first (append-only: nothing edits or deletes it)."""
        if cursor != "-" and any(int(part) >= 2**64 for part in cursor.split("-")):
            raise HTTPException(422, "cursor is not an entry id of the audit log")
        entries = await audit.read(caller.tenant_id, cursor, limit)
        items = [
            AuditOut(
                id=e.id,
                at=dt.datetime.fromtimestamp(e.at, dt.UTC),
                key_id=e.key_id,
                action=e.action,
                target=e.target,
                address=e.address,
                request_id=e.request_id,
            )
            for e in entries
        ]
        return AuditPage(items=items, next_cursor=items[-1].id if len(items) == limit else None)

    @r.get("/limits", response_model=LimitsOut, tags=["limits"])
    async def read_limits(caller: Caller = viewer) -> LimitsOut:
        """Your tenant's outbound limits and how much of them is in use."""
        limits = await tenants.limits(caller.tenant_id, default_limits)
        usage = await limiter.usage(caller.tenant_id, time.time())
        base = limiter.cents_per_minute
        return LimitsOut(
            calls_per_minute=limits.calls_per_minute,
            concurrent_calls=limits.concurrent_calls,
            daily_spend_cents=limits.daily_spend_cents,
            allowed_destinations=sorted(DestinationClass(c) for c in limits.allowed_destinations),
            cents_per_minute={c: class_price(c, base, destinations) for c in DestinationClass},
            cents_reserved_per_call=limiter.reserve_cents(),
            usage=UsageOut(**asdict(usage)),
        )

    return r


__all__ = ["router"]
