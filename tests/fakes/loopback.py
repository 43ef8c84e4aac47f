"""Serve a :class:`tests.fakes.carrier_apis.FakeApi` on a loopback port, for a running platform.

The fake sees each request as if it had reached the carrier's real host (``host``), so the
same fakes check the requests of in-process clients and of a ``bonmoniq serve`` child process.
"""

from __future__ import annotations

import httpx
from aiohttp import web

from carriers.simulation import LoopbackApi
from tests.fakes.carrier_apis import FakeApi


class LoopbackFake(LoopbackApi):
    """``fake`` answering on ``127.0.0.1:port`` as ``host``."""

    def __init__(self, fake: FakeApi, port: int, host: str) -> None:
        super().__init__(port)
        self.fake, self.host = fake, host

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        url = httpx.URL(f"https://{self.host}{request.path_qs}")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "host"]
        forwarded = httpx.Request(
            request.method, url, headers=headers, content=await request.read()
        )
        try:
            answer = self.fake.handle(forwarded)
        except AssertionError as e:  # the platform sent what the carrier does not accept
            return web.json_response({"error": f"fake rejected the request: {e}"}, status=400)
        return web.Response(
            body=answer.content,
            status=answer.status_code,
            content_type=answer.headers.get("content-type", "application/json").split(";")[0],
        )
