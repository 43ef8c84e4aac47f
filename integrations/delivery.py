"""The webhook delivery worker: sends due deliveries, retries them, gives up after the window.

Every serving process runs one. A due delivery is claimed with one Lua script (its due time
becomes the end of a lease and the claim's token is written in the delivery), so two
processes never send the same attempt and an attempt a dead process left is due again when
its lease ends. An attempt (building the payload, then sending it) is bounded below the lease;
the payload is stored, and the attempt finished, by scripts that check the token, so an attempt
that lost its lease changes nothing. A ``call.ended`` whose transcript is still being written is
put back without counting as an attempt. A failure is retried after a random wait up to
``base x 2^(attempts-1)`` (at most ``cap``: exponential backoff with full jitter) until the
window has passed since the first attempt. An endpoint with no success for that long is
disabled (audited); only the endpoint's failures count (no connection, refused address,
timeout, an HTTP error), never the platform's trouble building the payload. Each attempt is
logged with its status code, the attempt count, the next attempt and the error, never the
payload or the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from integrations.egress import Egress
from integrations.endpoints import Endpoints
from integrations.errors import (
    EgressFailed,
    EgressRefused,
    EndpointNotFound,
    SealedUnreadable,
)
from integrations.outbox import DATA_KIND, PAYLOAD_KIND
from integrations.payload import Payloads
from integrations.sealed import Sealer
from integrations.signing import signed_headers
from store import keys

log = logging.getLogger(__name__)
USER_AGENT = "Bonmoniq-Webhooks/1"
_UNREADABLE = "the delivery's data cannot be opened (the tenant's key is gone)"
#: Failures no retry can mend: the delivery ends as ``failed`` at once.
_FINAL = frozenset({"endpoint deleted", "endpoint disabled", _UNREADABLE})

_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], 'lease_token', ARGV[4])
return 1
"""
_FINISH = """
if redis.call('HGET', KEYS[2], 'lease_token') ~= ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[4])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[2], 'lease_token')
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""
_STORE_PAYLOAD = """
if redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'payload', ARGV[2])
return 1
"""
#: Not attempted yet (``call.ended`` waiting for its transcript): due again, no attempt counted.
_DEFER = """
if redis.call('HGET', KEYS[2], 'lease_token') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], 'lease_token')
redis.call('HSET', KEYS[2], 'next_attempt_at', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class _Outcome:
    """How an attempt went."""

    attempts: int
    first: float
    status_code: int | None
    error: str | None
    #: The failure is the endpoint's (it counts towards disabling it), not the platform's.
    endpoint_fault: bool
    started: float
    now: float


class _LeaseLost(Exception):
    """The attempt's lease is gone (expired and claimed again, or the delivery erased)."""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: full-jitter exponential backoff within a window."""

    base_s: float
    cap_s: float
    window_s: float

    def delay(self, attempts: int, rng: random.Random) -> float:
        """The wait after the ``attempts``-th failed attempt."""
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempts - 1, 60)))


#: Told when an endpoint is disabled: (tenant, endpoint id, reason, time).
OnDisabled = Callable[[str, str, str, float], Awaitable[None]]


class DeliveryWorker:
    """Sends the queued webhook deliveries of every tenant."""

    def __init__(
        self,
        redis: Redis,
        endpoints: Endpoints,
        sealer: Sealer,
        egress: Egress,
        payloads: Payloads,
        policy: RetryPolicy,
        *,
        timeout_s: float = 10.0,
        lease_s: float = 120.0,
        poll_s: float = 1.0,
        max_bytes: int = 64 * 1024,
        on_disabled: OnDisabled | None = None,
        keep_s: float = 7 * 24 * 3600.0,
        defer_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """Send through ``egress``; bodies from ``payloads``; retries as ``policy`` says.

        An attempt takes at most 80 % of ``lease_s``; a payload not ready yet is looked at
        again ``defer_s`` later.
        """
        self.redis = redis
        self.endpoints = endpoints
        self.sealer = sealer
        self.egress = egress
        self.payloads = payloads
        self.policy = policy
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.max_bytes = max_bytes
        self.on_disabled = on_disabled
        self.keep_s = keep_s
        self.attempt_s = lease_s * 0.8
        self.defer_s = defer_s
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._store_payload = redis.register_script(_STORE_PAYLOAD)
        self._defer = redis.register_script(_DEFER)

    async def run_forever(self) -> None:
        """Send due deliveries until cancelled; a Redis error is logged and waited out."""
        while True:
            try:
                sent = await self.run_once()
            except RedisError as e:
                log.warning("webhook worker: state store error", extra={"error": type(e).__name__})
                sent = 0
            except Exception:  # the worker outlives any one delivery's trouble
                log.exception("webhook worker failed; going on")
                sent = 0
            if not sent:
                await asyncio.sleep(self.poll_s)

    async def run_once(self, limit: int = 16) -> int:
        """Claim and attempt the deliveries due now (at most ``limit``); how many were tried."""
        now = self._clock()
        due = await self.redis.zrangebyscore(keys.deliveries_due(), "-inf", now, start=0, num=limit)
        claimed: list[tuple[str, str]] = []
        for delivery_id in map(str, due):
            token = secrets.token_hex(8)
            got = await self._claim(
                keys=[keys.deliveries_due(), keys.delivery(delivery_id)],
                args=[delivery_id, now, now + self.lease_s, token],
            )
            if int(got):
                claimed.append((delivery_id, token))
        await asyncio.gather(*(self.attempt(d, t) for d, t in claimed))
        return len(claimed)

    async def attempt(self, delivery_id: str, token: str) -> None:
        """One attempt of a claimed delivery, finished (or left to its lease) whatever happens."""
        raw = keys.strs(await self.redis.hgetall(keys.delivery(delivery_id)))
        if not raw.get("tenant"):  # erased since it was claimed
            return
        tenant, endpoint_id = raw["tenant"], raw["endpoint_id"]
        started = self._clock()
        first = float(raw["first_attempt_at"]) if raw.get("first_attempt_at") else started
        attempts = int(raw.get("attempts") or 0) + 1
        fields: dict[str, str] = {"attempts": str(attempts), "first_attempt_at": str(first)}
        code: int | None = None
        error: str | None = None
        #: Whether the failure is the endpoint's (its health), not the platform's.
        theirs = False
        sending = False
        try:
            async with asyncio.timeout(self.attempt_s):
                endpoint = await self.endpoints.get(tenant, endpoint_id)
                if not endpoint.enabled:
                    error = "endpoint disabled"
                else:
                    body = await self._body(raw, token)
                    if body is None:
                        await self._put_back(delivery_id, token)
                        return
                    secret = await self.endpoints.secret(tenant, endpoint_id)
                    headers = signed_headers(secret, raw["webhook_id"], int(self._clock()), body)
                    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
                    sending = True
                    answer = await self.egress.request(
                        "POST",
                        endpoint.url,
                        headers=headers,
                        body=body,
                        timeout_s=self.timeout_s,
                        max_bytes=self.max_bytes,
                    )
                    code = answer.status
                    if 300 <= code < 400:
                        error = f"HTTP {code}: redirect not followed"
                    elif not 200 <= code < 300:
                        error = f"HTTP {code}"
                    theirs = error is not None
        except _LeaseLost:
            log.warning("webhook attempt lost its lease", extra={"delivery_id": delivery_id})
            return
        except EndpointNotFound:
            error = "endpoint deleted"
        except SealedUnreadable:
            error = _UNREADABLE
        except (EgressRefused, EgressFailed) as e:
            error, theirs = str(e), True
        except TimeoutError:
            if sending:
                error, theirs = f"no answer within {self.attempt_s:g} s", True
            else:
                error = "the payload was not ready in time"
        except Exception as e:  # an attempt's failure is retried, never the worker's end
            log.exception("webhook attempt failed", extra={"delivery_id": delivery_id})
            error = f"internal error ({type(e).__name__})"
        now = self._clock()
        outcome = _Outcome(attempts, first, code, error, theirs, started, now)
        await self._settle(raw, token, fields, outcome)

    async def _put_back(self, delivery_id: str, token: str) -> None:
        """Due again soon, the lease given back; not an attempt."""
        due = self._clock() + self.defer_s
        await self._defer(
            keys=[keys.deliveries_due(), keys.delivery(delivery_id)],
            args=[delivery_id, token, repr(due)],
        )
        log.info("webhook not ready yet", extra={"delivery_id": delivery_id})

    async def _body(self, raw: dict[str, str], token: str) -> bytes | None:
        """The payload, built at the first attempt and kept sealed for the retries.

        ``None``: not ready to be built yet. Raises :class:`_LeaseLost` when the built payload
        cannot be kept because the lease is no longer this attempt's.
        """
        tenant, delivery_id = raw["tenant"], raw["delivery_id"]
        if raw.get("payload"):
            return await self.sealer.open(tenant, delivery_id, PAYLOAD_KIND, raw["payload"])
        data = json.loads(await self.sealer.open(tenant, delivery_id, DATA_KIND, raw["data"]))
        body = await self.payloads.build(
            tenant, raw["event"], raw.get("call_id", ""), data, float(raw["created_at"])
        )
        if body is None:
            return None
        sealed = await self.sealer.seal(tenant, delivery_id, PAYLOAD_KIND, body)
        kept = await self._store_payload(keys=[keys.delivery(delivery_id)], args=[token, sealed])
        if not int(kept):
            raise _LeaseLost(delivery_id)
        return body

    async def _settle(
        self, raw: dict[str, str], token: str, fields: dict[str, str], o: _Outcome
    ) -> None:
        tenant, endpoint_id, delivery_id = raw["tenant"], raw["endpoint_id"], raw["delivery_id"]
        error, now = o.error, o.now
        code = o.status_code
        fields |= {"last_status_code": "" if code is None else str(code), "last_error": error or ""}
        next_at = ""
        if error is None:
            fields |= {"status": "delivered", "delivered_at": str(now)}
        elif error in _FINAL or now - o.first >= self.policy.window_s:
            fields["status"] = "failed"
        else:
            next_at = str(now + self.policy.delay(o.attempts, self._rng))
            fields |= {"status": "pending", "next_attempt_at": next_at}
        record = json.dumps(
            {
                "at": o.started,
                "status_code": code,
                "error": error,
                "duration_s": round(now - o.started, 3),
            }
        )
        keep_ms = int(self.keep_s * 1000)
        args: list[str | float] = [delivery_id, token, next_at, record, keep_ms]
        for k, v in fields.items():
            args += [k, v]
        kept = bool(
            int(
                await self._finish(
                    keys=[
                        keys.deliveries_due(),
                        keys.delivery(delivery_id),
                        keys.delivery_attempts(delivery_id),
                    ],
                    args=args,
                )
            )
        )
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "webhook attempt",
            extra={
                "delivery_id": delivery_id,
                "event": raw["event"],
                "endpoint_id": endpoint_id,
                "call_id": raw.get("call_id", ""),
                "status_code": code,
                "attempts": o.attempts,
                "outcome": fields["status"],
                "next_attempt_at": float(next_at) if next_at else None,
                "error": error,
                "lease_kept": kept,
            },
        )
        if not kept:  # another attempt owns the delivery now (or it was erased): its outcome
            return
        if error is None:
            await self.endpoints.succeeded(tenant, endpoint_id)
        elif o.endpoint_fault and error not in _FINAL:
            window = self.policy.window_s
            if await self.endpoints.failed(tenant, endpoint_id, now, window, error):
                log.warning(
                    "webhook endpoint disabled",
                    extra={"tenant": tenant, "endpoint_id": endpoint_id, "error": error},
                )
                if self.on_disabled is not None:
                    with contextlib.suppress(Exception):
                        reason = (await self.endpoints.get(tenant, endpoint_id)).disabled_reason
                        await self.on_disabled(tenant, endpoint_id, reason or error, now)
