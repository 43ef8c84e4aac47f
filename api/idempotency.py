"""``Idempotency-Key`` on the POSTs that create or call: a retry gets the first response.

A key is scoped to the credentials that sent it (a digest of the ``Authorization`` header), so
no one can read another caller's response by guessing a key. Nothing is claimed or replayed
before the route's own credentials check (api/auth.py) has accepted the request: that check
calls :func:`admitted`, so an unknown, revoked or expired key gets 401 and a key without the
route's role 403, never a stored response. The first request claims the key (``SET NX``, in
flight); a retry arriving while it runs is a 409, a retry with another body is a 422, and a
retry after it succeeded gets the stored response with ``Idempotent-Replayed: true``. Only
successes are kept (24 hours): a request that failed can be retried as it is.

What is kept is sealed: AES-256-GCM under a key derived (HKDF-SHA256) from the
``Authorization`` value and the ``Idempotency-Key``, which only the client holds, with the
record's Redis key as associated data; the request's fingerprint is an HMAC under a sibling key.
Redis and its append-only file see neither a new API key nor an export's personal data. Each
record is listed in the index of its tenant (``keys.idempotency_index``) with the data subjects
it is about (:func:`about`), so that erasure and offboarding delete it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Request, Response
from redis.asyncio import Redis
from starlette.responses import Response as StarletteResponse

from api.problems import problem
from store import keys

log = logging.getLogger(__name__)
HEADER = "Idempotency-Key"
#: How long a success is replayed.
KEEP_S = 24 * 3600
#: The largest response kept for replay: a larger one (a data-subject export with recordings)
#: is not kept, so a retry runs the request again (such requests only read).
KEEP_MAX_BYTES = 1024 * 1024
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
_NONCE_BYTES = 12
#: The ``detail`` of each refusal.
_INVALID = "use 1-255 visible ASCII characters, e.g. a UUID"
_REUSED = "this key was used for a different request: use a new key for a new request"
_IN_FLIGHT = "the first request with this key has not finished: retry shortly"
_UNREADABLE = "the response stored under this key cannot be replayed: use a new key"


def applies(request: Request) -> bool:
    """POSTs of the customer API (``/v1/...``) that carry the header."""
    return (
        request.method == "POST"
        and request.url.path.startswith("/v1/")
        and HEADER.lower() in request.headers
    )


class _Sealer:
    """The two keys of one (credentials, Idempotency-Key) pair: sealing and fingerprinting."""

    def __init__(self, authorization: str, idempotency_key: str) -> None:
        material = authorization.encode() + b"\x00" + idempotency_key.encode()
        self._seal = _derive(material, b"bonmoniq/idempotency/seal/v1")
        self._mac = _derive(material, b"bonmoniq/idempotency/fingerprint/v1")

    def fingerprint(self, method: str, path: str, body: bytes) -> str:
        what = method.encode() + b" " + path.encode() + b"\n" + body
        return hmac.new(self._mac, what, hashlib.sha256).hexdigest()

    def seal(self, slot: str, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + AESGCM(self._seal).encrypt(nonce, plaintext, slot.encode())
        return base64.b64encode(sealed).decode()

    def open(self, slot: str, sealed: str) -> bytes:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(self._seal).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], slot.encode())


def _derive(material: bytes, info: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt=None, info=info).derive(material)


@dataclass
class _Pending:
    """An idempotent request being served: what its claim needs, and what it claimed."""

    redis: Redis
    slot: str
    fingerprint: str
    sealer: _Sealer
    claimed: bool = False
    #: Tenants the response concerns, each with the data subjects (digests) it names.
    about: dict[str, set[str]] = field(default_factory=dict)


_PENDING: ContextVar[_Pending | None] = ContextVar("idempotency_pending", default=None)


class _Replay(Exception):  # noqa: N818 - not an error: the answer is already known
    """Raised by :func:`admitted` to answer with a stored (or refusing) response instead."""

    def __init__(self, response: StarletteResponse) -> None:
        super().__init__("idempotent replay")
        self.response = response


async def admitted(tenant: str | None) -> None:
    """The route accepted the request's credentials (of ``tenant``; ``None``: the operator).

    Claims the request's ``Idempotency-Key`` then, or answers the retry (stored response, 409,
    422) by raising out of the route. Outside an idempotent request it does nothing.
    """
    pending = _PENDING.get()
    if pending is None or pending.claimed:
        return
    claim = await pending.redis.eval(_CLAIM, 1, pending.slot, pending.fingerprint, str(IN_FLIGHT_S))
    if not claim:
        raise _Replay(await _replay(pending))
    pending.claimed = True
    if tenant is not None:
        pending.about.setdefault(tenant, set())


def about(tenant: str, subject: str | None = None) -> None:
    """Note that the response being made concerns ``tenant`` (and a data ``subject``'s digest).

    A route calls it when its response names a data subject or a tenant other than the
    caller's (a new tenant), so that erasure or offboarding finds the stored copy. Outside an
    idempotent request it does nothing.
    """
    pending = _PENDING.get()
    if pending is not None:
        pending.about.setdefault(tenant, set()).update([subject] if subject else [])


async def handle(
    redis: Redis, request: Request, call_next: Callable[[Request], Awaitable[StarletteResponse]]
) -> StarletteResponse:
    """Run ``request`` once per key; replay, refuse or pass through as described above."""
    key = request.headers[HEADER.lower()]
    if not _VALID.fullmatch(key):
        return problem(400, "idempotency_key_invalid", "Invalid Idempotency-Key", _INVALID)
    body = await request.body()
    auth = request.headers.get("authorization", "")
    key_id = _KEY_ID.search(auth)
    digest = hashlib.sha256(auth.encode()).hexdigest()[:32]
    # The key id leads, so that offboarding finds a tenant's stored responses by its keys too.
    scope = f"{key_id.group(1) if key_id else 'operator'}:{digest}"
    sealer = _Sealer(auth, key)
    slot = keys.idempotency(scope, hashlib.sha256(key.encode()).hexdigest()[:32])
    fingerprint = sealer.fingerprint(request.method, request.url.path, body)
    pending = _Pending(redis, slot, fingerprint, sealer)
    token = _PENDING.set(pending)
    try:
        response = await call_next(request)
        content = b""
        async for chunk in response.body_iterator:  # type: ignore[attr-defined]
            content += chunk if isinstance(chunk, bytes) else chunk.encode()
    except _Replay as replay:
        return replay.response
    except BaseException:
        if pending.claimed:
            await redis.delete(pending.slot)
        raise
    finally:
        _PENDING.reset(token)
    if pending.claimed and 200 <= response.status_code < 300 and len(content) <= KEEP_MAX_BYTES:
        try:
            await _keep(pending, response, content)
        except Exception:  # the request succeeded: its answer goes out, only the copy is lost
            log.warning("idempotent response not kept", exc_info=True)
            with contextlib.suppress(Exception):
                await redis.delete(pending.slot)
    elif pending.claimed:
        await redis.delete(pending.slot)
    return Response(
        content,
        status_code=response.status_code,
        headers=dict(response.headers),
        media_type=response.media_type,
    )


async def _keep(pending: _Pending, response: StarletteResponse, content: bytes) -> None:
    """Store the sealed response and list it in each tenant's index it concerns."""
    headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
    plain = json.dumps({"status": response.status_code, "headers": headers}).encode()
    plain += b"\n" + content
    slot = pending.slot
    done = {"state": "done", "sealed": pending.sealer.seal(slot, plain)}
    async with pending.redis.pipeline(transaction=True) as p:
        p.hset(slot, mapping=keys.fields(done))
        p.expire(slot, KEEP_S)
        for tenant, subjects in pending.about.items():
            index = keys.idempotency_index(tenant)
            p.hset(index, slot, " ".join(sorted(subjects)))
            # The index outlives its newest record; stale names in it point at nothing.
            p.expire(index, KEEP_S + IN_FLIGHT_S)
        await p.execute()


async def _replay(pending: _Pending) -> StarletteResponse:
    slot = pending.slot
    stored = keys.strs(await pending.redis.hgetall(slot))
    if not hmac.compare_digest(stored.get("fingerprint", ""), pending.fingerprint):
        return problem(422, "idempotency_key_reused", "Idempotency-Key reused", _REUSED)
    if stored.get("state") != "done":
        response = problem(409, "idempotency_in_flight", "Request in progress", _IN_FLIGHT)
        response.headers["Retry-After"] = "1"
        return response
    try:
        head, _, body = pending.sealer.open(slot, stored["sealed"]).partition(b"\n")
        kept = json.loads(head)
    except (InvalidTag, KeyError, ValueError, binascii.Error):
        log.warning("stored idempotent response unreadable", extra={"slot": slot})
        return problem(422, "idempotency_key_reused", "Idempotency-Key reused", _UNREADABLE)
    headers = dict(kept["headers"]) | {"Idempotent-Replayed": "true"}
    return Response(body, int(kept["status"]), headers=headers)
