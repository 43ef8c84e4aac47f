"""Request bodies are limited at the edge: a 200 MB unsigned POST, declared or streamed in
chunks, is refused with 413 problem+json, and the live server's memory does not grow."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from api.bodylimit import DEFAULT_LIMIT, LIMITS, limit_for
from tests.conftest import LiveServer
from tests.helpers import auth, new_tenant

HUGE = 200 * 1024 * 1024
CHUNK = 64 * 1024
#: How much the server's resident memory may grow while refusing HUGE bytes.
GROWTH_ALLOWED = 8 * 1024 * 1024


def rss(pid: int) -> int:
    """Resident bytes of process ``pid`` now."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """The highest resident size of ``pid`` seen while the block runs (``[peak]``)."""
    peak = [rss(pid)]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss(pid))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        done.set()
        t.join()
        peak[0] = max(peak[0], rss(pid))


async def post_huge(
    server: LiveServer, path: str, headers: dict[str, str], chunked: bool
) -> tuple[int, dict[str, str], bytes, int]:
    """POST ``HUGE`` bytes to ``path`` over a raw socket, as fast as the server takes them.

    Returns the status, headers and body of the answer, and how many body bytes were sent
    before it came (the sending stops as soon as the server answers or closes).
    """
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = 0

    async def send_body() -> None:
        nonlocal sent
        block = b"a" * CHUNK
        frame = f"{CHUNK:x}\r\n".encode() + block + b"\r\n" if chunked else block
        while sent < HUGE:
            writer.write(frame)
            await writer.drain()
            sent += CHUNK
            await asyncio.sleep(0)  # the reader reads the answer while this sends
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    sender = asyncio.create_task(send_body())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 120)
        answer_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(answer_headers.get("content-length", "0")))
    finally:
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError):
            pass
        writer.close()
    return int(status_line.split()[1]), answer_headers, body, sent


def test_every_carrier_webhook_and_the_api_have_a_limit() -> None:
    assert limit_for("/webhooks/twilio/voice") == dict(LIMITS)["/webhooks/twilio/"]
    assert limit_for("/webhooks/telnyx") == dict(LIMITS)["/webhooks/telnyx"]
    assert limit_for("/webhooks/sinch") == dict(LIMITS)["/webhooks/sinch"]
    assert limit_for("/v1/agents") == dict(LIMITS)["/v1/"]
    assert limit_for("/healthz") == DEFAULT_LIMIT
    assert all(n <= 64 * 1024 for p, n in LIMITS if p.startswith("/webhooks/"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "path", ["/webhooks/twilio/voice", "/webhooks/telnyx", "/webhooks/sinch", "/v1/agents"]
)
async def test_a_200_mb_unsigned_post_is_refused_without_growing_the_server(
    live_server: LiveServer, live_redis: Redis, path: str, chunked: bool
) -> None:
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer bmq_0123456789abcdef_forged",
        "Idempotency-Key": "fuzz-1",  # idempotency reads the whole body: it must not get it
        "X-Twilio-Signature": "forged",
    }
    pid = live_server.proc.pid
    with peak_rss(pid) as peak:
        before = rss(pid)
        status, answer, body, sent = await post_huge(live_server, path, headers, chunked)
    assert status == 413, body[:500]
    assert answer["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "body_too_large"
    assert sent < HUGE  # the server answered before the body was all there
    assert peak[0] - before < GROWTH_ALLOWED, (before, peak[0])


async def test_the_largest_agent_a_client_may_send_is_under_the_api_limit(
    live_server: LiveServer, live_redis: Redis
) -> None:
    """8,000 astral characters of prompt, JSON-escaped (12 bytes each), still get through."""
    _, admin = await new_tenant(live_server, "big")
    body = {"name": "big", "system_prompt": "\U0001f600" * 8000, "greeting": "\U0001f600" * 500}
    raw = json.dumps(body).encode()
    assert len(raw) > 64 * 1024
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post(
            "/v1/agents", content=raw, headers=auth(admin) | {"Content-Type": "application/json"}
        )
    assert r.status_code == 201, r.text
