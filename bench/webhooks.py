"""Signed Twilio voice webhooks answered per second by one platform process.

The load generator keeps ``concurrency`` HTTP/1.1 keep-alive connections busy with requests
signed beforehand (each a new CallSid to a served number, so each one routes, records a
call and answers TwiML), and counts the 200 answers. It runs in this process, on the same
machine as the platform and its Redis, so the figure is a floor: on two cores the three
share the CPU. The same run measures ``GET /healthz`` the same way: the HTTP stack's own
ceiling on this machine, the baseline the webhook figure is compared with.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode, urlsplit

from carriers.twilio.signature import compute_signature


def signed_voice_requests(
    url: str, account_sid: str, auth_token: str, to: str, n: int
) -> list[bytes]:
    """``n`` raw HTTP requests: Twilio's voice webhook for ``n`` new calls to ``to``."""
    parts = urlsplit(url)
    target = url + "/webhooks/twilio/voice"
    out = []
    for k in range(n):
        params = {
            "CallSid": f"CA{k:032d}",
            "AccountSid": account_sid,
            "From": "+15555559999",
            "To": to,
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        body = urlencode(params).encode()
        sig = compute_signature(target, sorted(params.items()), auth_token)
        head = (
            f"POST /webhooks/twilio/voice HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request on a kept-alive connection; its status code."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def throughput(
    url: str, requests: list[bytes], seconds: float = 5.0, concurrency: int = 16
) -> dict[str, float]:
    """Requests answered 200 per second (and any other answers), over ``seconds``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    answered = failed = 0
    deadline = time.monotonic() + seconds
    queue = iter(requests)

    async def worker() -> None:
        nonlocal answered, failed
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                raw = next(queue, None)
                if raw is None:
                    return
                if await _exchange(reader, writer, raw) == 200:
                    answered += 1
                else:
                    failed += 1
        finally:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    return {"per_s": round(answered / elapsed, 1), "answered": answered, "failed": failed}


async def run(
    url: str, account_sid: str, auth_token: str, to: str, seconds: float = 5.0
) -> dict[str, float | dict[str, float]]:
    """Voice webhooks per second next to ``/healthz`` per second, same server, same client."""
    parts = urlsplit(url)
    health = f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    ceiling = await throughput(url, [health] * 10**6, seconds)
    # More than one run can answer: every request is a call the platform has not seen.
    webhooks = await throughput(
        url, signed_voice_requests(url, account_sid, auth_token, to, int(seconds * 5000)), seconds
    )
    return {
        "webhooks_per_s": webhooks["per_s"],
        "webhooks": webhooks,
        "healthz_per_s": ceiling["per_s"],
        "webhooks_to_healthz_ratio": round(webhooks["per_s"] / max(ceiling["per_s"], 0.1), 3),
    }


async def main() -> dict[str, object]:
    """Start the platform (its Redis, its embedded LLM idle) and measure it."""
    import shutil
    import tempfile
    from pathlib import Path

    from bench.encryption import machine
    from bench.voice import ACCOUNT_SID, AUTH_TOKEN, NUMBER, start_ours

    var = Path(tempfile.mkdtemp(prefix="bonmoniq-bench-webhooks-"))
    system = start_ours(var)  # logging at INFO, as operators run it
    try:
        return {"machine": machine(), **await run(system.url, ACCOUNT_SID, AUTH_TOKEN, NUMBER)}
    finally:
        system.stop()
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(main()), indent=2))
