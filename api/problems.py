"""RFC 9457 problem+json responses, each with a stable ``code``.

Each package's typed errors are translated here, found by the package's base class: the status
is the class's own entry in ``_STATUS`` or its nearest base's, the ``code`` the error's own. A
refusal (4xx, 502, 503) says why in ``detail``; an error of the platform itself (500) says only
where to look, and its traceback is logged.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from calls.errors import CallError
from carriers.errors import (
    CarrierApiError,
    CarrierError,
    CarrierUnavailable,
    SignatureInvalid,
    WebhookMalformed,
)
from integrations.errors import (
    DeliveryNotFound,
    EgressRefused,
    EndpointNotFound,
    IntegrationError,
    SealedUnreadable,
)
from llm.errors import LLMError, LLMUnavailable
from recordings.errors import DecryptionError, RecordingsError
from routing.errors import (
    AgentExists,
    AgentInUse,
    AgentNotFound,
    DestinationRefused,
    InvalidNumber,
    NumberTaken,
    RouteRefused,
    RoutingError,
)
from tenancy.errors import LastAdminKey, LimitExceeded, TenancyError
from voice.errors import AnnouncementIncomplete, VoiceError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
#: HTTP status by error class; a class not listed takes its nearest listed base's. The first
#: entries are the packages' base classes (``DecryptionError`` is the crypto format's own).
_STATUS: dict[type[Exception], int] = {
    CarrierError: 400,
    RoutingError: 400,
    TenancyError: 400,
    VoiceError: 500,
    CallError: 500,
    RecordingsError: 500,
    DecryptionError: 500,
    LLMError: 500,
    SignatureInvalid: 403,
    WebhookMalformed: 400,
    CarrierUnavailable: 503,
    CarrierApiError: 502,
    InvalidNumber: 422,
    AgentExists: 409,
    NumberTaken: 409,
    AgentNotFound: 404,
    AgentInUse: 409,
    RouteRefused: 422,
    DestinationRefused: 403,
    LastAdminKey: 409,
    AnnouncementIncomplete: 422,
    LLMUnavailable: 503,
    IntegrationError: 400,
    EgressRefused: 422,
    EndpointNotFound: 404,
    DeliveryNotFound: 404,
    SealedUnreadable: 500,
}
#: The classes whose errors are translated (each package's base, and the crypto format's).
_BASES = (
    CarrierError,
    RoutingError,
    TenancyError,
    VoiceError,
    CallError,
    RecordingsError,
    DecryptionError,
    LLMError,
    IntegrationError,
)
#: The errors that refuse a WebSocket's handshake with a problem (a carrier's media stream).
_REFUSE_HANDSHAKE = (CarrierError, RoutingError)
#: The detail of an error of the platform itself (500): what went wrong is only logged.
INTERNAL_DETAIL = "the request id (X-Request-ID) finds the reason in the platform's log"


#: The detail of every ``carrier_api_error``: the carrier's own answer is only logged.
CARRIER_API_DETAIL = (
    "the carrier's API refused the request or could not be reached; the request id "
    "(X-Request-ID) finds the reason in the platform's log"
)

#: The methods a 405's ``Allow`` may name (RFC 9110, section 9).
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiProblem(Exception):
    """A refusal with its own stable ``code`` (for those no typed domain error covers)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        """``status`` and ``code`` of the problem; ``detail`` for people."""
        super().__init__(detail)
        self.status, self.code = status, code


class Problem(BaseModel):
    """An RFC 9457 problem document; ``code`` is stable and meant for programs."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None


def responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` documenting problem+json answers with ``statuses``."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        s: {
            "description": HTTPStatus(s).phrase,
            "model": Problem,
            "content": {MEDIA_TYPE: {"schema": schema}},
        }
        for s in statuses
    }


#: What any authenticated ``/v1`` endpoint can answer besides success.
API_ERRORS = responses(400, 401, 403, 404, 409, 422, 429, 502, 503)


def problem(status: int, code: str, title: str, detail: str = "") -> JSONResponse:
    """A problem+json response."""
    body = {"type": f"https://bonmoniq.dev/problems/{code}", "title": title, "status": status}
    body["code"] = code
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def status_of(exc: Exception) -> int:
    """The HTTP status of a typed error (400 for an error of no listed class)."""
    return next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), 400)


def install(app: FastAPI) -> None:
    """Translate typed errors into problem+json at the HTTP boundary."""

    async def _typed(request: Request, exc: Exception) -> JSONResponse:
        if request.scope["type"] != "http" and not isinstance(exc, _REFUSE_HANDSHAKE):
            raise exc  # the socket ends as on any error of the platform
        status = status_of(exc)
        code = getattr(exc, "code", "error")
        extra = {"code": code, "path": request.url.path, "error": str(exc)}
        if status == 500:
            log.error("request failed", extra=extra, exc_info=exc)
            return problem(status, code, type(exc).__name__, INTERNAL_DETAIL)
        log.warning("request refused", extra=extra)
        # What a carrier's API said is for the operator's log, never for the API's client.
        detail = CARRIER_API_DETAIL if isinstance(exc, CarrierApiError) else str(exc)
        return problem(status, code, type(exc).__name__, detail)

    for base in _BASES:
        app.add_exception_handler(base, _typed)

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> JSONResponse:
        log.warning("request refused", extra={"code": exc.code, "path": request.url.path})
        response = problem(exc.status, exc.code, HTTPStatus(exc.status).phrase, str(exc))
        if exc.status == 401:  # RFC 6750: how to authenticate
            response.headers["WWW-Authenticate"] = f'Bearer error="{exc.code}"'
        return response

    @app.exception_handler(LimitExceeded)
    async def _limited(request: Request, exc: LimitExceeded) -> JSONResponse:
        refused = exc.refused
        log.warning("limit reached", extra={"limit": refused.limit, "path": request.url.path})
        response = problem(429, exc.code, "Limit exceeded", str(exc))
        response.headers["Retry-After"] = str(refused.retry_after_s)
        return response

    @app.exception_handler(RedisError)
    async def _redis(request: Request, exc: RedisError) -> JSONResponse:
        log.error("state store unavailable", extra={"path": request.url.path, "error": str(exc)})
        return problem(503, "state_store_unavailable", "State store unavailable", "retry later")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "validation_error", "Invalid request", str(exc.errors())[:1000])

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        title = HTTPStatus(exc.status_code).phrase
        response = problem(exc.status_code, code, title, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:  # RFC 9110: every method of the resource, from all its routes
            response.headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return response


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route of ``app`` serves at the path of ``scope``.

    Starlette's own ``Allow`` names only the first route matching the path, though a resource's
    methods are often spread over several routes (``GET`` and ``POST /v1/agents``); each
    method is tried against every route, as routing would.
    """
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
        )
    ]
