"""``/v1/operator``: the operator creates tenants and sets their outbound limits."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.exceptions import HTTPException

from api import idempotency
from api.auth import operator
from api.problems import API_ERRORS
from routing.destinations import RESTRICTED, DestinationClass
from tenancy.audit import AuditLog
from tenancy.limits import Limits
from tenancy.tenants import TenantStore


class LimitsIn(BaseModel):
    """A tenant's outbound limits (0 forbids outbound calls)."""

    model_config = ConfigDict(extra="ignore")
    calls_per_minute: StrictInt = Field(ge=0, le=100_000)
    concurrent_calls: StrictInt = Field(ge=0, le=100_000)
    daily_spend_cents: StrictInt = Field(ge=0, le=100_000_000)
    allowed_destinations: list[DestinationClass] | None = Field(
        default=None,
        max_length=len(DestinationClass),
        description="Destination classes besides standard the tenant may call (premium_rate, "
        "satellite...); every other one is refused. Omitted: the tenant's current allowance.",
    )

    def limits(self, current: frozenset[str] = frozenset()) -> Limits:
        """As :class:`Limits`; without ``allowed_destinations``, the ``current`` allowance."""
        allowed = current if self.allowed_destinations is None else self.allowed_destinations
        restricted = frozenset(str(c) for c in allowed if c in RESTRICTED)
        return Limits(
            self.calls_per_minute, self.concurrent_calls, self.daily_spend_cents, restricted
        )


class TenantCreate(BaseModel):
    """A new tenant; without ``limits`` it gets the operator's defaults."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=200)
    limits: LimitsIn | None = None


class TenantCreated(BaseModel):
    """A tenant and its first admin key (shown once)."""

    tenant_id: str
    name: str
    api_key: str


def router(
    *, tenants: TenantStore, audit: AuditLog, default_limits: Limits, operator_token: str | None
) -> APIRouter:
    """Routes open to ``operator_token`` only (``None``: to no one).

    ``default_limits`` are those of a tenant without its own; each change of a tenant's limits
    is written to that tenant's audit log.
    """
    r = APIRouter(prefix="/v1", responses=API_ERRORS)
    as_operator = Depends(operator(lambda: operator_token))

    @r.post(
        "/operator/tenants",
        status_code=201,
        response_model=TenantCreated,
        tags=["operator"],
        dependencies=[as_operator],
    )
    async def create_tenant(body: TenantCreate, request: Request) -> TenantCreated:
        """Operator only: a new tenant and its first admin key."""
        limits = body.limits.limits() if body.limits else None
        tenant, raw = await tenants.create_tenant(body.name, time.time(), limits)
        if limits is not None:
            await audit_operator(request, tenant.tenant_id, "limits.set", limits)
        idempotency.about(tenant.tenant_id)  # a stored copy of its key goes with offboarding
        return TenantCreated(tenant_id=tenant.tenant_id, name=tenant.name, api_key=raw)

    @r.put(
        "/operator/tenants/{tenant_id}/limits",
        response_model=LimitsIn,
        tags=["operator"],
        dependencies=[as_operator],
    )
    async def set_limits(tenant_id: str, body: LimitsIn, request: Request) -> LimitsIn:
        """Operator only: set a tenant's outbound limits and allowed destination classes.

        Recorded in the tenant's audit log (key id ``operator``).
        """
        current = await tenants.limits(tenant_id, default_limits)
        limits = body.limits(current.allowed_destinations)
        if not await tenants.set_limits(tenant_id, limits):
            raise HTTPException(404, "no such tenant")
        await audit_operator(request, tenant_id, "limits.set", limits)
        return LimitsIn(
            calls_per_minute=limits.calls_per_minute,
            concurrent_calls=limits.concurrent_calls,
            daily_spend_cents=limits.daily_spend_cents,
            allowed_destinations=sorted(DestinationClass(c) for c in limits.allowed_destinations),
        )

    async def audit_operator(request: Request, tenant_id: str, action: str, limits: Limits) -> None:
        """Record an operator's change of a tenant's limits in the tenant's audit log."""
        detail = {
            "calls_per_minute": limits.calls_per_minute,
            "concurrent_calls": limits.concurrent_calls,
            "daily_spend_cents": limits.daily_spend_cents,
            "allowed_destinations": sorted(limits.allowed_destinations),
        }
        await audit.append(
            tenant_id,
            at=time.time(),
            key_id="operator",
            action=action,
            target=tenant_id,
            address=request.client.host if request.client else "",
            request_id=getattr(request.state, "request_id", ""),
            detail=detail,
        )

    return r


__all__ = ["router"]
