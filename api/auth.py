"""Who is calling: a tenant's API key (Bearer) with a role, or the operator's token."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.exceptions import HTTPException

from api import idempotency
from tenancy.tenants import RANK, Caller, Role, TenantStore


class Unauthorized(HTTPException):
    """No usable credentials (401, with ``WWW-Authenticate: Bearer``)."""

    def __init__(self, detail: str = "a valid API key is required") -> None:
        """Missing, unknown, revoked or expired credentials."""
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HTTPException):
    """Authenticated, but the role does not allow this (403)."""

    def __init__(self, detail: str) -> None:
        """``detail`` says which role is needed."""
        super().__init__(403, detail)


def bearer(request: Request) -> str:
    """The Bearer token of the request, or :class:`Unauthorized`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    return token.strip()


def tenant_key(store: TenantStore, role: Role) -> Callable[[Request], Awaitable[Caller]]:
    """A FastAPI dependency: a usable key of at least ``role``."""

    async def dependency(request: Request) -> Caller:
        key = await store.authenticate(bearer(request), time.time())
        if key is None:
            raise Unauthorized("the API key is unknown, revoked or expired")
        if RANK[key.role] < RANK[role]:
            raise Forbidden(f"this needs a key with role {role} or above; yours is {key.role}")
        # Only now may an Idempotency-Key be claimed or its stored response replayed.
        await idempotency.admitted(key.tenant_id)
        address = request.client.host if request.client else ""
        return Caller(key, address, getattr(request.state, "request_id", ""))

    return dependency


def operator(token: Callable[[], str | None]) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: the operator's token (``BONMONIQ_OPERATOR_TOKEN``)."""

    async def dependency(request: Request) -> None:
        expected = token()
        given = bearer(request)
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("operator credentials are required")
        await idempotency.admitted(None)

    return dependency
