"""``Idempotency-Key`` on the POSTs that create or call: a retry gets the first response.

A key is scoped to the credentials that sent it (a digest of the ``Authorization`` header), so
no one can read another caller's response by guessing a key. The first request claims the key
(``SET NX``, in flight); a retry arriving while it runs is a 409, a retry with another body is
a 422, and a retry after it succeeded gets the stored response with ``Idempotent-Replayed:
true``. Only successes are kept (24 hours): a request that failed can be retried as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from redis.asyncio import Redis
from starlette.responses import Response as StarletteResponse

from api.problems import problem
from routing import keys

log = logging.getLogger(__name__)
HEADER = "Idempotency-Key"
#: How long a success is replayed.
KEEP_S = 24 * 3600
#: How long an unfinished first request holds its key (a crash frees it after this).
IN_FLIGHT_S = 120
_KEY_ID = re.compile(r"\bbmq_([0-9a-f]{16})_")
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'fingerprint', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
#: Response headers replayed with the body.
_KEPT_HEADERS = ("content-type", "location")


def applies(request: Request) -> bool:
    """POSTs of the customer API (``/v1/...``) that carry the header."""
    return (
        request.method == "POST"
        and request.url.path.startswith("/v1/")
        and HEADER.lower() in request.headers
    )


async def handle(
    redis: Redis, request: Request, call_next: Callable[[Request], Awaitable[StarletteResponse]]
) -> StarletteResponse:
    """Run ``request`` once per key; replay, refuse or pass through as described above."""
    key = request.headers[HEADER.lower()]
    if not _VALID.fullmatch(key):
        return problem(
            400, "idempotency_key_invalid", "Invalid Idempotency-Key",
            "use 1-255 visible ASCII characters, e.g. a UUID",
        )  # fmt: skip
    body = await request.body()
    auth = request.headers.get("authorization", "")
    key_id = _KEY_ID.search(auth)
    digest = hashlib.sha256(auth.encode()).hexdigest()[:32]
    # The key id leads, so that offboarding and erasure find a tenant's stored responses.
    scope = f"{key_id.group(1) if key_id else 'anonymous'}:{digest}"
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
    ).hexdigest()
    slot = keys.idempotency(scope, hashlib.sha256(key.encode()).hexdigest()[:32])
    if not await redis.eval(_CLAIM, 1, slot, fingerprint, str(IN_FLIGHT_S)):
        return await _replay(redis, slot, fingerprint)
    try:
        response = await call_next(request)
        content = b""
        async for chunk in response.body_iterator:  # type: ignore[attr-defined]
            content += chunk if isinstance(chunk, bytes) else chunk.encode()
    except BaseException:
        await redis.delete(slot)
        raise
    if 200 <= response.status_code < 300:
        headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
        async with redis.pipeline(transaction=True) as p:
            done = {"state": "done", "status": str(response.status_code),
                    "headers": json.dumps(headers), "body": content.hex()}  # fmt: skip
            p.hset(slot, mapping=keys.fields(done))
            p.expire(slot, KEEP_S)
            await p.execute()
    else:
        await redis.delete(slot)
    return Response(
        content, status_code=response.status_code, headers=dict(response.headers),
        media_type=response.media_type,
    )  # fmt: skip


async def _replay(redis: Redis, slot: str, fingerprint: str) -> StarletteResponse:
    stored = keys.strs(await redis.hgetall(slot))
    if stored.get("fingerprint") != fingerprint:
        return problem(
            422, "idempotency_key_reused", "Idempotency-Key reused",
            "this key was used for a different request: use a new key for a new request",
        )  # fmt: skip
    if stored.get("state") != "done":
        response = problem(
            409, "idempotency_in_flight", "Request in progress",
            "the first request with this key has not finished: retry shortly",
        )  # fmt: skip
        response.headers["Retry-After"] = "1"
        return response
    headers = json.loads(stored["headers"]) | {"Idempotent-Replayed": "true"}
    return Response(bytes.fromhex(stored["body"]), int(stored["status"]), headers=headers)
