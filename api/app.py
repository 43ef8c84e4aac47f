"""The FastAPI app factory: routers given, the edge's middleware, problem+json, health checks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import idempotency, metrics, problems
from api.bodylimit import BodyLimit
from api.context import current_request_id

log = logging.getLogger(__name__)


def _request_id(given: str) -> str:
    """The caller's ``X-Request-ID`` if it is a sane token, else a new one."""
    if not given or len(given) > 100 or not given.replace("-", "").isalnum():
        return uuid.uuid4().hex
    return given


class Conventions:
    """Request ids, webhook counts and idempotency keys, for every HTTP request.

    A request id goes on the response (``X-Request-ID``), on each log line and into
    ``request.state``; webhook results are counted for ``/metrics``; the customer API's POSTs
    with an ``Idempotency-Key`` run once, a retry replayed only to credentials the route accepts,
    from a sealed copy (api/idempotency.py). Plain ASGI: Starlette's
    ``BaseHTTPMiddleware`` runs each request in a task and copies the response through a
    stream; only requests with an idempotency key, whose body and response must be kept, take
    that path.
    """

    def __init__(self, app: ASGIApp, redis: Redis) -> None:
        """Wrap ``app``; idempotency records live in ``redis``."""
        self.app = app

        async def once(request: Request, call_next: Any) -> Any:
            return await idempotency.handle(redis, request, call_next)

        self.idempotent = BaseHTTPMiddleware(app, dispatch=once)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (anything but HTTP passes through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rid = _request_id(request.headers.get("x-request-id", ""))
        request.state.request_id = rid
        status = 500

        async def stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        inner = self.idempotent if idempotency.applies(request) else self.app
        token = current_request_id.set(rid)
        try:
            await inner(scope, receive, stamped)
        finally:
            current_request_id.reset(token)
            if scope["path"].startswith("/webhooks/"):
                metrics.count_webhook(scope["path"], status)


class NotReady(Exception):  # noqa: N818 - an answer of the readiness check, not a fault
    """What a readiness check raises: the part not ready (``title``), said to anyone asking.

    ``code``: ``not_ready`` (a part is missing or failing), or a state of the process that
    sends new calls elsewhere: ``at_capacity``, ``draining``.
    """

    def __init__(self, title: str, detail: str, cause: object, code: str = "not_ready") -> None:
        """``title`` and ``detail`` go in the 503; ``cause`` (URLs, internal errors) is logged."""
        super().__init__(title)
        self.title, self.detail, self.cause, self.code = title, detail, cause, code


#: The readiness check: the body of a ready answer, or :class:`NotReady`.
Readiness = Callable[[], Awaitable[dict[str, Any]]]


def not_ready(title: str, detail: str, cause: object, code: str = "not_ready") -> JSONResponse:
    """A 503 with a generic ``detail``; ``cause`` (URLs, internal errors) is only logged.

    A fault (``not_ready``) is a warning; being full or draining is the process working.
    """
    level = logging.WARNING if code == "not_ready" else logging.DEBUG
    log.log(level, "not ready", extra={"reason": title, "code": code, "cause": str(cause)})
    return problems.problem(503, code, title, detail)


def create_app(routers: Iterable[APIRouter], redis: Redis, readiness: Readiness) -> FastAPI:
    """The ASGI app serving ``routers``, in order.

    ``redis`` keeps the responses of idempotent requests; ``readiness`` answers ``/readyz``.
    """
    app = FastAPI(title="Bonmoniq Voice", version="0.1.0")
    problems.install(app)
    for router in routers:
        app.include_router(router)
    # /metrics is not here: `serve` answers it on its own listener (BONMONIQ_METRICS_ADDR).

    app.add_middleware(Conventions, redis=redis)
    # Bodies are limited before signatures, idempotency or parsing.
    app.add_middleware(BodyLimit)
    # Added last, so outermost: every answer is counted, a body refused as too large too.
    app.add_middleware(metrics.RequestMetrics, routes=app.router.routes)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse | dict[str, Any]:
        """The process takes calls: not full, not draining; Redis, the models, the LLM answer."""
        # Anyone may ask: the answer says which part is not ready, the log says why.
        try:
            return await readiness()
        except NotReady as e:
            return not_ready(e.title, e.detail, e.cause, e.code)

    return app
