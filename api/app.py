"""The FastAPI application: carrier webhooks, the media WebSocket, health checks."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
from api.logs import current_request_id
from api.platform import Platform
from llm.client import probe
from llm.errors import LLMUnavailable


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
    app.include_router(metrics.router())

    @app.middleware("http")
    async def idempotent(request: Request, call_next: Any) -> Any:
        """Creating POSTs with an ``Idempotency-Key`` run once (api/idempotency.py)."""
        if idempotency.applies(request):
            return await idempotency.handle(platform.redis, request, call_next)
        response = await call_next(request)
        if request.url.path.startswith("/webhooks/"):
            metrics.count_webhook(request.url.path, response.status_code)
        return response

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Any:
        """A request id on every response and every log line of the request."""
        rid = request.headers.get("x-request-id", "")
        if not rid or len(rid) > 100 or not rid.replace("-", "").isalnum():
            rid = uuid.uuid4().hex
        request.state.request_id = rid
        token = current_request_id.set(rid)
        try:
            response = await call_next(request)
        finally:
            current_request_id.reset(token)
        response.headers["X-Request-ID"] = rid
        return response

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse | dict[str, Any]:
        """Redis answers, the models are loaded and the LLM server answers."""
        try:
            await platform.redis.ping()
        except Exception as e:  # any failure means not ready; say which
            return problems.problem(503, "not_ready", "State store unreachable", str(e))
        missing = platform.engines.missing()
        if missing:
            return problems.problem(503, "not_ready", "Models not loaded", ", ".join(missing))
        try:
            await probe(platform.engines.llm)
        except LLMUnavailable as e:
            return problems.problem(503, "not_ready", "LLM unreachable", str(e))
        now = time.time()
        usable = platform.health(now)
        carriers = {
            str(c): "up" if usable.usable(c, now) else "down"
            for c in sorted(platform.controls, key=str)
        }
        return {"status": "ready", "models": "loaded", "llm": "reachable", "carriers": carriers}

    return app
