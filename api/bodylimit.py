"""Request body limits at the edge: no route reads more of a body than its limit.

:class:`BodyLimit` is the app's outermost middleware, so it runs before signature checks,
idempotency and parsing. A declared ``Content-Length`` over the path's limit is refused at once
(413, nothing read); a body without one (chunked) is counted as it streams in and refused when
it passes the limit, so no more than the limit and one chunk are ever held.

Limits (README, "Request body limits"): the carriers document no maximum for their voice
webhooks; each limit is many times the largest event they describe.

- Twilio: form posts of call parameters (CallSid, From, To, status...), 1-3 KB.
- Telnyx and Sinch: JSON events of a few KB; SIP/call headers they may carry make them larger.
- ``/v1``: JSON of the customer API; the largest is an agent (8,000 + 1,500 characters of
  text, up to 12 bytes each once JSON-escaped: about 114 KB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem

log = logging.getLogger(__name__)
KIB = 1024
#: Longest prefix first: the first that ``path`` starts with gives its limit in bytes.
LIMITS: tuple[tuple[str, int], ...] = (
    ("/webhooks/twilio/amd", 16 * KIB),  # answering-machine detection: CallSid, AnsweredBy
    ("/webhooks/twilio/", 16 * KIB),
    ("/webhooks/telnyx", 64 * KIB),
    ("/webhooks/sinch", 64 * KIB),
    ("/webhooks/transfer/", 16 * KIB),
    ("/v1/", 256 * KIB),
)
#: Any other path (health, metrics, schema: none of them takes a body).
DEFAULT_LIMIT = 64 * KIB
CODE = "body_too_large"
#: After a 413, how much more of the body is read and dropped, and for how long at most:
#: more than the kernel's socket buffers may hold (a few MB), so that a client still sending
#: gets to read the answer before the connection closes. Dropped bytes take no memory.
LINGER_BYTES = 16 * 1024 * KIB
LINGER_S = 2.0


def limit_for(path: str, limits: tuple[tuple[str, int], ...] = LIMITS) -> int:
    """The most bytes of body a request to ``path`` may send."""
    return next((n for prefix, n in limits if path.startswith(prefix)), DEFAULT_LIMIT)


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or ``None`` when absent or not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes its limit (the app stops reading)."""

    def __init__(self, limit: int) -> None:
        """Over ``limit`` bytes."""
        super().__init__(413, f"the request body is over {limit} bytes, the limit of this path")
        self.limit = limit


class BodyLimit:
    """ASGI middleware refusing request bodies over their path's limit with 413 problem+json."""

    def __init__(self, app: ASGIApp, limits: tuple[tuple[str, int], ...] = LIMITS) -> None:
        """Wrap ``app``, limiting bodies by path as in ``limits``."""
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, reading at most its limit of body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"], self.limits)
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, limit)
            return
        received = 0
        exceeded = False
        started = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the 413 below answers instead of whatever the app made of it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            await _refuse(scope, receive, send, limit)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Answer 413, read and drop a little more of the body, then close the connection.

    Closing with unread data makes the kernel reset the connection, and a client still sending
    would lose the answer with it: the answer goes out first, then up to ``LINGER_BYTES`` (for
    at most ``LINGER_S``) are read and dropped so that the client can read it.
    """
    # The route's prefix, not its path: a path may hold a phone number.
    route = next((prefix for prefix, _ in LIMITS if scope["path"].startswith(prefix)), "other")
    log.warning("request body too large", extra={"route": route, "limit": limit})
    response = problem(413, CODE, "Content Too Large", BodyTooLarge(limit).detail)
    headers = [*response.raw_headers, (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while dropped < LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
                dropped += len(message.get("body", b""))
    await send({"type": "http.response.body", "body": b"", "more_body": False})
