"""``/metrics`` (Prometheus text format) and the API's own counters.

``/metrics`` is served on its own listener (``BONMONIQ_METRICS_ADDR``, loopback by default), not
on the public app: it tells anyone the platform's traffic.

Call metrics (active calls, pipeline stage latencies) are defined in :mod:`voice.metrics`;
this module adds carrier webhook results, counted from every response under ``/webhooks/``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

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
