"""The FastAPI application: carrier webhooks, the media WebSocket, health checks."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import (
    idempotency,
    metrics,
    problems,
    public,
    routes_agents,
    routes_calls,
    routes_data,
    routes_keys,
    routes_numbers,
    routes_sinch,
    routes_telnyx,
    routes_twilio,
)
from api.bodylimit import BodyLimit
from api.context import current_request_id
from app.platform import Platform
from llm.client import probe
from llm.errors import LLMUnavailable

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


def not_ready(title: str, detail: str, cause: object) -> JSONResponse:
    """A 503 with a generic ``detail``; ``cause`` (URLs, internal errors) is only logged."""
    log.warning("not ready", extra={"reason": title, "cause": str(cause)})
    return problems.problem(503, "not_ready", title, detail)


def create_app(platform: Platform) -> FastAPI:
    """The ASGI app serving ``platform``."""
    app = FastAPI(title="Bonmoniq Voice", version="0.1.0")
    app.state.platform = platform
    problems.install(app)
    app.include_router(routes_twilio.router(platform))
    app.include_router(routes_telnyx.router(platform))
    app.include_router(routes_sinch.router(platform))
    app.include_router(public.router(platform.register))
    app.include_router(routes_keys.router(platform))
    app.include_router(routes_agents.router(platform))
    app.include_router(routes_numbers.router(platform))
    app.include_router(routes_calls.router(platform))
    app.include_router(routes_data.router(platform))
    # /metrics is not here: `serve` answers it on its own listener (BONMONIQ_METRICS_ADDR).

    app.add_middleware(Conventions, redis=platform.redis)
    # Added last, so outermost: bodies are limited before signatures, idempotency or parsing.
    app.add_middleware(BodyLimit)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse | dict[str, Any]:
        """Redis answers, the models are loaded and the LLM server answers."""
        # Anyone may ask: the answer says which part is not ready, the log says why.
        try:
            await platform.redis.ping()
        except Exception as e:  # any failure means not ready
            return not_ready("State store unreachable", "the state store does not answer", e)
        missing = platform.engines.missing()
        if missing:
            return not_ready("Models not loaded", "speech models are not loaded", missing)
        try:
            await probe(platform.engines.llm)
        except LLMUnavailable as e:
            return not_ready("LLM unreachable", "the language model does not answer", e)
        now = time.time()
        usable = platform.health(now)
        carriers = {
            str(c): "up" if usable.usable(c, now) else "down"
            for c in sorted(platform.controls, key=str)
        }
        return {"status": "ready", "models": "loaded", "llm": "reachable", "carriers": carriers}

    return app
