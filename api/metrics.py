"""``/metrics`` (Prometheus text format) and the API's own counters.

``/metrics`` is served on its own listener (``BONMONIQ_METRICS_ADDR``, loopback by default), not
on the public app: it tells anyone the platform's traffic.

Call metrics (active calls, pipeline stage latencies) are defined in :mod:`voice.metrics`,
admission (calls admitted and refused, calls in progress, the cap, draining) in
:mod:`telephony.metrics`; this module adds carrier webhook results, counted from every response
under ``/webhooks/``, and every HTTP request by method, route template and status
(:class:`RequestMetrics`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEBHOOKS = Counter(
    "bonmoniq_webhooks_total",
    "Carrier webhooks answered, by carrier and result (accepted, refused_signature, malformed, "
    "unknown, unavailable, error).",
    ["carrier", "result"],
)
#: The result label of each refusing status (any other: ``error``).
_RESULTS = {
    400: "malformed",
    403: "refused_signature",
    404: "unknown",
    409: "unknown",
    422: "malformed",
    503: "unavailable",
}


def count_webhook(path: str, status: int) -> None:
    """Count a response to ``/webhooks/{carrier}/...``."""
    carrier = path.split("/")[2] if path.count("/") >= 2 else ""
    if carrier not in ("twilio", "telnyx", "sinch"):
        return
    result = "accepted" if status < 300 else _RESULTS.get(status, "error")
    WEBHOOKS.labels(carrier, result).inc()


HTTP_REQUESTS = Counter(
    "bonmoniq_http_requests",
    "HTTP requests answered, by method, route template (never the path: ids are data; "
    "other: no route) and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "bonmoniq_http_request_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: Methods counted under their own name; any other is ``OTHER`` (labels stay few).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"


def route_of(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that served ``scope`` (``/v1/calls/{call_id}``), or ``other``.

    A request answered before routing (a body over its limit) is matched against ``routes``.
    """
    route: Any = scope.get("route")
    if route is None:
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else OTHER


class RequestMetrics:
    """ASGI middleware: each HTTP request counted and timed by method, route template, status.

    WebSockets (media streams) are not HTTP requests and pass through uncounted.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        """Wrap ``app``; ``routes`` (the app's, read at each request) name unrouted requests."""
        self.app = app
        self.routes = routes
        #: (method, route, status) -> the counter and histogram children: no label lookup per
        #: request once a combination has been seen.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, then count it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            self._observe(scope, status, time.perf_counter() - t0)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else OTHER
        key = (method, route_of(scope, self.routes), status)
        children = self._children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(key[0], key[1], str(status)),
                HTTP_SECONDS.labels(key[0], key[1]),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def router() -> APIRouter:
    """``GET /metrics``."""
    r = APIRouter(tags=["operations"])

    @r.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        """Prometheus metrics: active calls, webhook results by carrier, stage latencies."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return r


def app() -> FastAPI:
    """The metrics listener's app: ``GET /metrics`` only, no schema or docs."""
    metrics_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    metrics_app.include_router(router())
    return metrics_app
