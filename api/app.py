"""The FastAPI application: carrier webhooks, the media WebSocket, health checks."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from api import problems, public, routes_sinch, routes_telnyx, routes_twilio
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

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse | dict[str, str]:
        """Redis answers, the models are loaded and the LLM server answers."""
        try:
            await platform.redis.ping()
        except Exception as e:  # any failure means not ready; say which
            return problems.problem(503, "not_ready", "State store unreachable", str(e))
        try:
            await probe(platform.engines.llm)
        except LLMUnavailable as e:
            return problems.problem(503, "not_ready", "LLM unreachable", str(e))
        return {"status": "ready"}

    return app
