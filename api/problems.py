"""RFC 9457 problem+json responses, each with a stable ``code``."""

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

from carriers.errors import (
    CarrierApiError,
    CarrierError,
    CarrierUnavailable,
    SignatureInvalid,
    WebhookMalformed,
)
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
from tenancy.limits import LimitExceeded

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
_STATUS = {
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
}


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


def install(app: FastAPI) -> None:
    """Translate typed errors into problem+json at the HTTP boundary."""

    @app.exception_handler(CarrierError)
    @app.exception_handler(RoutingError)
    async def _typed(request: Request, exc: Exception) -> JSONResponse:
        status = _STATUS.get(type(exc), 400)
        code = getattr(exc, "code", "error")
        log.warning(
            "request refused", extra={"code": code, "path": request.url.path, "error": str(exc)}
        )
        # What a carrier's API said is for the operator's log, never for the API's client.
        detail = CARRIER_API_DETAIL if isinstance(exc, CarrierApiError) else str(exc)
        return problem(status, code, type(exc).__name__, detail)

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> JSONResponse:
        log.warning("request refused", extra={"code": exc.code, "path": request.url.path})
        return problem(exc.status, exc.code, HTTPStatus(exc.status).phrase, str(exc))

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
