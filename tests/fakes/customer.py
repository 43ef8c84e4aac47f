"""A customer's HTTPS endpoint (tools, webhooks) on loopback, with a trustme certificate.

It runs in a thread of its own (usable from sync fixtures and async tests alike), records every
request (method, path, query, headers, body) and answers what the test scripted: a queue of
:class:`Answer` or one callable; an empty queue answers 200 ``{"ok": true}``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web

from llm.server import free_port
from tests.fakes.threaded import ThreadedServer

#: A public-looking name the certificate also holds (tests map it to loopback with a fake DNS).
NAME = "tools.customer.test"


@dataclass(frozen=True)
class Answer:
    """What the endpoint answers to one request."""

    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Answer:
        """A JSON answer."""
        return cls(status, json.dumps(value).encode())

    @classmethod
    def redirect(cls, to: str, status: int = 302) -> Answer:
        """A redirect to ``to`` (which must not be followed)."""
        return cls(status, b"", "text/plain", headers={"Location": to})


@dataclass(frozen=True)
class Received:
    """One request the endpoint got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class CustomerEndpoint(ThreadedServer):
    """An HTTPS server on ``127.0.0.1``; its certificate names it, ``localhost`` and :data:`NAME`."""

    thread_name = "customer-endpoint"

    def __init__(self, ca: trustme.CA) -> None:
        """Serve with a certificate issued by ``ca``."""
        super().__init__()
        self.ca = ca
        self.port = free_port()
        self.received: list[Received] = []
        self.answers: deque[Answer] | Callable[[Received], Answer] = deque()
        self._lock = threading.Lock()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        """The https URL of ``path``."""
        return f"https://{host}:{self.port}{path}"

    def script(self, *answers: Answer | Callable[[Received], Answer]) -> None:
        """Answer the next requests with ``answers`` (or one callable); forget requests."""
        with self._lock:
            self.received.clear()
            if len(answers) == 1 and not isinstance(answers[0], Answer):
                self.answers = answers[0]
            else:
                self.answers = deque(a for a in answers if isinstance(a, Answer))

    def requests(self) -> list[Received]:
        """The requests so far."""
        with self._lock:
            return list(self.received)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        got = Received(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
        )
        with self._lock:
            self.received.append(got)
            script = self.answers
            if isinstance(script, deque):
                answer = script.popleft() if script else Answer()
            else:
                answer = script(got)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": answer.content_type, **answer.headers},
        )

    async def _start(self) -> None:
        app = web.Application(client_max_size=4 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost", NAME).configure_cert(context)
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()
