"""The configuration-write limit as a route dependency: 429 ``rate_limited`` with ``Retry-After``.

The token bucket itself is :class:`tenancy.write_limits.WriteLimiter`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from tenancy.tenants import Caller
from tenancy.write_limits import WriteLimiter


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


__all__ = ["rate_limited", "write_limit"]
