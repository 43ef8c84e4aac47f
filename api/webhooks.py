"""What every carrier's HTTP routes share: plain webhook routes and the signature check."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.platform import Platform
from carriers.base import WebhookRequest
from carriers.errors import CarrierUnavailable, SignatureInvalid
from routing.policy import Carrier

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]


def webhook_route(r: APIRouter, path: str) -> Callable[[Endpoint], Endpoint]:
    """Register a carrier's webhook on ``r`` as a plain Starlette route (``POST path``).

    A webhook reads its own signed body and needs none of FastAPI's parameter injection, which
    took a tenth of the time of each request; it stays out of the OpenAPI schema.
    """

    def add(endpoint: Endpoint) -> Endpoint:
        r.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
        return endpoint

    return add


async def verified(platform: Platform, carrier: Carrier, request: Request) -> WebhookRequest:
    """The request, if the carrier signed it (for the public URL); :class:`SignatureInvalid`."""
    verifier = platform.verifiers.get(carrier)
    if verifier is None:
        raise CarrierUnavailable(f"{carrier} is not configured on this platform")
    # From the ASGI scope: building ``request.url`` cost 8% of a webhook's time.
    path, query = request.scope["path"], request.scope["query_string"].decode("latin-1")
    url = platform.settings.public(path) + (f"?{query}" if query else "")
    req = WebhookRequest(request.method, url, await request.body(), dict(request.headers))
    verdict = verifier.verify(req, time.time())
    if not verdict:
        log.warning(
            "webhook refused",
            extra={"carrier": str(carrier), "path": path, "reason": verdict.reason},
        )
        raise SignatureInvalid(verdict.reason)
    return req
