"""Webhook deliveries on a real Redis to a real HTTPS receiver that verifies each request with
the ``standardwebhooks`` library: retries keep the webhook-id, two workers never send one
attempt twice, a worker that dies loses nothing, an endpoint failing for the whole window is
disabled, a delivery in flight is not replayed, a call's deliveries go with its erasure, and
``call.ended`` waits for its transcript and is sent whatever of the call cannot be read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from calls.archive import CallArchive
from calls.store import CallStore
from carriers.base import InboundCall
from integrations.delivery import DeliveryWorker, RetryPolicy
from integrations.egress import Egress
from integrations.endpoints import Endpoints
from integrations.errors import DeliveryInFlight
from integrations.outbox import Outbox
from integrations.payload import Payloads
from integrations.sealed import Sealer
from integrations.secrets import ToolSecrets
from recordings.crypto import Identity
from recordings.keyring import KeyRing
from recordings.lifecycle import Lifecycle
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage
from recordings.transcripts import TranscriptLog, TurnRecord
from routing.directory import Directory
from store import keys
from tests import privacy
from tests.conftest import MASTER_KEY
from tests.fakes.customer import Answer, Received
from tests.helpers import ROUTING, a_call, agent_with_number

CALLER = "+15555550123"  # in the event's data: never in clear in Redis (tests/privacy.py)


class Parts:
    """An outbox, its endpoints and a way to make workers, on one Redis."""

    def __init__(self, redis: Redis, ca: Any, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.ca = ca
        self.sealer = Sealer(KeyRing(redis, MASTER_KEY))
        self.endpoints = Endpoints(redis, self.sealer)
        self.outbox = Outbox(redis, self.endpoints, self.sealer, clock=clock)
        self.disabled: list[tuple[str, str, str]] = []

    async def _disabled(self, tenant: str, endpoint_id: str, reason: str, now: float) -> None:
        self.disabled.append((tenant, endpoint_id, reason))

    def worker(
        self,
        clock: Callable[[], float] = time.time,
        window_s: float = 3600,
        lease_s: float = 5,
        objects: EncryptedObjects | None = None,
    ) -> DeliveryWorker:
        calls = CallStore(self.redis, objects, keyring=self.sealer.keyring)
        payloads = Payloads(calls, Directory(self.redis), None, clock=clock)
        return DeliveryWorker(
            self.redis,
            self.endpoints,
            self.sealer,
            Egress(("127.0.0.1",), ca_file=self.ca.pem_path),
            payloads,
            RetryPolicy(0.01, 0.05, window_s),
            timeout_s=3,
            lease_s=lease_s,
            poll_s=0.02,
            on_disabled=self._disabled,
            clock=clock,
        )

    async def endpoint(
        self, url: str, tenant: str = "t1", events: tuple[str, ...] = ("call.transferred",)
    ) -> tuple[str, str]:
        made, secret = await self.endpoints.create(tenant, url, events, "", True)
        privacy.SEEN.secrets.add(secret)
        return made.endpoint_id, secret


async def until(check: Callable[[], Any], what: str, limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


def verified(secret: str, requests: list[Received]) -> list[Any]:
    return [Webhook(secret).verify(r.body, r.headers) for r in requests]


async def test_a_failing_endpoint_gets_the_event_on_the_fourth_attempt_with_the_same_id(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    parts = Parts(redis, tool_ca)
    endpoint_id, secret = await parts.endpoint(customer.url())
    customer.script(Answer(status=500), Answer(status=500), Answer(status=500), Answer())
    await parts.outbox.emit("t1", "call.transferred", "call_a", {"to": CALLER, "mode": "cold"})
    [delivery] = await parts.outbox.page("t1", endpoint_id=None, status=None, before=None, limit=5)
    worker = parts.worker()

    async def delivered() -> bool:
        await worker.run_once()
        return (await parts.outbox.get("t1", delivery.delivery_id)).status == "delivered"

    await until(delivered, "delivery")
    got = customer.requests()
    assert len(got) == 4
    assert {r.headers["webhook-id"] for r in got} == {delivery.webhook_id}
    bodies = verified(secret, got)
    assert bodies[0] == bodies[3]
    assert bodies[3]["type"] == "call.transferred"
    assert bodies[3]["data"] == {"call_id": "call_a", "to": CALLER, "mode": "cold"}
    done = await parts.outbox.get("t1", delivery.delivery_id)
    assert done.attempts == 4 and done.last_status_code == 200 and done.last_error is None
    log = await parts.outbox.attempts(delivery.delivery_id)
    assert [a.status_code for a in log] == [500, 500, 500, 200]
    assert [a.error for a in log] == ["HTTP 500"] * 3 + [None]
    assert (await parts.endpoints.get("t1", endpoint_id)).failing_since is None
    # Sealed at rest: neither the data nor the payload is readable in Redis.
    raw = await redis.hgetall(keys.delivery(delivery.delivery_id))
    assert raw["data"].startswith("sealed1.") and raw["payload"].startswith("sealed1.")
    assert await redis.zscore(keys.deliveries_due(), delivery.delivery_id) is None
    # Finished: kept for a while (listing, replay), then gone from Redis.
    assert 0 < await redis.pttl(keys.delivery(delivery.delivery_id)) <= 7 * 24 * 3600 * 1000
    # A replay: the same payload and webhook-id once more.
    customer.script()
    await parts.outbox.replay("t1", delivery.delivery_id)
    await until(delivered, "replay")
    [again] = customer.requests()
    assert await redis.pttl(keys.delivery(delivery.delivery_id)) > 0
    assert again.headers["webhook-id"] == delivery.webhook_id
    assert verified(secret, [again])[0] == bodies[3]


async def test_two_workers_never_send_the_same_attempt(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    parts = Parts(redis, tool_ca)
    _, secret = await parts.endpoint(customer.url())
    customer.script(lambda _req: Answer(delay_s=0.05))
    for n in range(12):
        await parts.outbox.emit("t1", "call.transferred", f"call_{n}", {"n": n})
    workers = [asyncio.create_task(parts.worker().run_forever()) for _ in range(2)]

    async def all_sent() -> bool:
        return await redis.zcard(keys.deliveries_due()) == 0

    try:
        await until(all_sent, "every delivery sent")
    finally:
        for w in workers:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
    got = customer.requests()
    ids = [r.headers["webhook-id"] for r in got]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert sorted(b["data"]["n"] for b in verified(secret, got)) == list(range(12))


async def test_a_worker_that_dies_loses_no_delivery(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    parts = Parts(redis, tool_ca)
    _, secret = await parts.endpoint(customer.url())
    # Between attempts: the first worker's attempt failed, then it is gone.
    customer.script(Answer(status=502), Answer())
    await parts.outbox.emit("t1", "call.transferred", "call_b", {"by": "tool"})
    first = parts.worker()
    await until(lambda: first.run_once(), "first attempt")
    second = parts.worker()
    await until(lambda: second.run_once(), "second attempt")
    got = customer.requests()
    assert [r.headers["webhook-id"] for r in got][0] == got[1].headers["webhook-id"]
    verified(secret, got)
    # During an attempt: the worker is cancelled while the endpoint has not answered; the
    # lease runs out and another worker sends the same message again.
    customer.script(Answer(delay_s=1.0), Answer())
    await parts.outbox.emit("t1", "call.transferred", "call_c", {"by": "dtmf"})
    dying = asyncio.create_task(parts.worker(lease_s=0.3).run_once())
    await until(lambda: asyncio.sleep(0, bool(customer.requests())), "first request")
    dying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    survivor = parts.worker(lease_s=0.3)

    async def resent() -> bool:
        await survivor.run_once()
        return len(customer.requests()) == 2

    await until(resent, "the attempt retried after the lease")
    a, b = customer.requests()
    assert a.headers["webhook-id"] == b.headers["webhook-id"]
    assert verified(secret, [b])[0]["data"]["by"] == "dtmf"


async def test_an_endpoint_failing_for_the_window_is_disabled_with_the_reason(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    now = [1000.0]
    parts = Parts(redis, tool_ca, clock=lambda: now[0])
    endpoint_id, _ = await parts.endpoint(customer.url())
    customer.script(lambda _req: Answer(status=500))
    worker = parts.worker(clock=lambda: now[0], window_s=100)
    await parts.outbox.emit("t1", "call.transferred", "call_d", {})
    [d] = await parts.outbox.page("t1", endpoint_id=endpoint_id, status=None, before=None, limit=5)
    await until(lambda: worker.run_once(), "first attempt")  # at 1000: fails, retried
    now[0] = 1050.0
    await until(lambda: worker.run_once(), "second attempt")  # within the window
    assert (await parts.outbox.get("t1", d.delivery_id)).status == "pending"
    assert (await parts.endpoints.get("t1", endpoint_id)).enabled
    now[0] = 1101.0
    await until(lambda: worker.run_once(), "last attempt")  # the window has passed
    gave_up = await parts.outbox.get("t1", d.delivery_id)
    assert gave_up.status == "failed" and gave_up.attempts == 3
    endpoint = await parts.endpoints.get("t1", endpoint_id)
    assert not endpoint.enabled and endpoint.disabled_at == 1101.0
    assert endpoint.disabled_reason and "HTTP 500" in endpoint.disabled_reason
    assert parts.disabled == [("t1", endpoint_id, endpoint.disabled_reason)]
    # Disabled: new events are not queued for it; enabled again, the reason is gone.
    await parts.outbox.emit("t1", "call.transferred", "call_e", {})
    assert (
        len(await parts.outbox.page("t1", endpoint_id=None, status=None, before=None, limit=5)) == 1
    )
    again = await parts.endpoints.update("t1", endpoint_id, enabled=True)
    assert again.enabled and again.disabled_reason is None and again.failing_since is None
    assert len(customer.requests()) == 3


async def test_a_delivery_in_flight_is_not_replayed_until_its_attempt_ends(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    parts = Parts(redis, tool_ca)
    _, secret = await parts.endpoint(customer.url())
    customer.script(Answer(delay_s=1.0), Answer())
    await parts.outbox.emit("t1", "call.transferred", "call_f", {"by": "api"})
    [d] = await parts.outbox.page("t1", endpoint_id=None, status=None, before=None, limit=5)
    worker = parts.worker()
    sending = asyncio.create_task(worker.run_once())
    await until(lambda: asyncio.sleep(0, bool(customer.requests())), "the attempt in flight")
    with pytest.raises(DeliveryInFlight):
        await parts.outbox.replay("t1", d.delivery_id)
    await sending
    assert (await parts.outbox.get("t1", d.delivery_id)).status == "delivered"
    replayed = await parts.outbox.replay("t1", d.delivery_id)
    assert replayed.status == "pending"

    async def delivered_again() -> bool:
        await worker.run_once()
        return len(customer.requests()) == 2

    await until(delivered_again, "the replay")
    a, b = customer.requests()
    assert a.headers["webhook-id"] == b.headers["webhook-id"] == d.webhook_id
    assert verified(secret, [b])[0]["data"]["by"] == "api"
    assert (await parts.outbox.get("t1", d.delivery_id)).attempts == 2


async def delivery_keys(redis: Redis, delivery_id: str) -> int:
    return int(await redis.exists(keys.delivery(delivery_id), keys.delivery_attempts(delivery_id)))


async def test_erasure_and_the_retention_sweep_delete_a_calls_deliveries(
    redis: Redis, customer: Any, tool_ca: Any, tmp_path: Path
) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path))
    parts = Parts(redis, tool_ca)
    life = Lifecycle(redis, objects, CallArchive(redis), forget_call=[parts.outbox.forget_call])
    route = await agent_with_number(redis, "t1", "desk", "+15555550401", 1)
    now = time.time()
    erased = await a_call(redis, objects, route, CALLER, now)
    swept = await a_call(redis, objects, route, "+15555550125", now)
    await parts.endpoint(customer.url())
    customer.script(lambda _req: Answer(delay_s=0.5))
    # One delivery of the erased call sent (its payload kept, sealed), one pending; one of the
    # other call in flight while it is swept.
    await parts.outbox.emit("t1", "call.transferred", erased, {"to": CALLER})
    worker = parts.worker()
    await until(lambda: worker.run_once(), "first delivery")
    await parts.outbox.emit("t1", "call.transferred", erased, {"to": CALLER})
    doomed = sorted(map(str, await redis.smembers(keys.call_deliveries(erased))))
    assert len(doomed) == 2
    assert any([await redis.hget(keys.delivery(d), "payload") for d in doomed])
    assert (await life.erase_subject("t1", CALLER)).erased == [erased]
    for delivery_id in doomed:
        assert await delivery_keys(redis, delivery_id) == 0
        assert await redis.zscore(keys.deliveries_due(), delivery_id) is None
        assert await redis.zscore(keys.tenant_deliveries("t1"), delivery_id) is None
    assert not await redis.exists(keys.call_deliveries(erased))
    await parts.outbox.emit("t1", "call.transferred", swept, {"n": 1})
    [kept] = await parts.outbox.page("t1", endpoint_id=None, status=None, before=None, limit=5)
    in_flight = asyncio.create_task(worker.run_once())
    await until(lambda: asyncio.sleep(0, len(customer.requests()) == 2), "the attempt in flight")
    assert (await life.sweep(now + 2 * 86400)).erased == [swept]
    await in_flight  # its outcome finds the delivery gone: nothing is written back
    assert await delivery_keys(redis, kept.delivery_id) == 0
    assert await redis.zcard(keys.deliveries_due()) == 0
    assert await redis.zcard(keys.tenant_deliveries("t1")) == 0
    assert await parts.endpoints.of_tenant("t1")  # the endpoint itself stays


async def an_ended_call(
    redis: Redis, objects: EncryptedObjects, finished: bool
) -> tuple[str, TranscriptLog]:
    number = "+1555555041" + ("1" if finished else "0")
    route = await agent_with_number(redis, "t1", "desk", number, 1)
    sid = "CA" + os.urandom(16).hex()
    call_id, _, _ = await CallStore(redis, objects).open_inbound(
        InboundCall("twilio", sid, "AC1", CALLER, route.number, "ringing"), route, 10.0, ROUTING
    )
    log = TranscriptLog(objects, Identity("t1", call_id, "transcript"), 1e12)
    privacy.SEEN.words.add("where is my parcel number four")
    await log.add(TurnRecord("caller", "where is my parcel number four", 11.0))
    if finished:
        await log.finish()
    return call_id, log


async def test_call_ended_waits_for_the_transcript_then_goes_out_with_what_there_is(
    redis: Redis, customer: Any, tool_ca: Any, tmp_path: Path
) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path))
    start = time.time()  # the receiver checks the signature's timestamp against its clock
    now = [start]
    parts = Parts(redis, tool_ca, clock=lambda: now[0])
    _, secret = await parts.endpoint(customer.url(), events=("call.ended",))
    customer.script()
    call_id, _ = await an_ended_call(redis, objects, finished=False)
    worker = parts.worker(clock=lambda: now[0], objects=objects)
    await parts.outbox.emit(
        "t1", "call.ended", call_id, {"ended_at": start - 5, "status": "completed"}
    )
    [d] = await parts.outbox.page("t1", endpoint_id=None, status=None, before=None, limit=5)
    await until(lambda: worker.run_once(), "a look at the delivery")
    # Still being written, the call ended 5 s ago: put back, not an attempt, nothing sent.
    waiting = await parts.outbox.get("t1", d.delivery_id)
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    assert await redis.hget(keys.delivery(d.delivery_id), "lease_token") is None
    assert await redis.zscore(keys.deliveries_due(), d.delivery_id) == start + 2.0
    assert customer.requests() == [] and await parts.outbox.attempts(d.delivery_id) == []
    # Half a minute later it goes with what was written, marked incomplete.
    now[0] = start + 30
    await until(lambda: worker.run_once(), "the attempt")
    [req] = customer.requests()
    data = verified(secret, [req])[0]["data"]
    assert data["transcript_complete"] is False
    assert [t["text"] for t in data["transcript"]] == ["where is my parcel number four"]
    assert (await parts.outbox.get("t1", d.delivery_id)).attempts == 1


async def test_an_unreadable_transcript_is_left_out_and_never_held_against_the_endpoint(
    redis: Redis, customer: Any, tool_ca: Any, tmp_path: Path
) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path))
    parts = Parts(redis, tool_ca)
    endpoint_id, secret = await parts.endpoint(customer.url(), events=("call.ended",))
    customer.script()
    call_id, _ = await an_ended_call(redis, objects, finished=True)
    for stored in tmp_path.rglob("*"):  # the transcript's sealed segments altered on disk
        if stored.is_file():
            stored.write_bytes(b"\0" * stored.stat().st_size)
    worker = parts.worker(objects=objects)
    await parts.outbox.emit("t1", "call.ended", call_id, {"ended_at": time.time()})
    await until(lambda: worker.run_once(), "the attempt")
    [req] = customer.requests()
    data = verified(secret, [req])[0]["data"]
    assert data["call_id"] == call_id and data["transcript"] is None
    assert "transcript not readable" in data["transcript_error"]
    assert (await parts.endpoints.get("t1", endpoint_id)).failing_since is None
    [d] = await parts.outbox.page("t1", endpoint_id=None, status=None, before=None, limit=5)
    assert d.status == "delivered"


async def test_offboarding_deletes_the_tenants_endpoints_deliveries_and_tools_secret(
    redis: Redis, customer: Any, tool_ca: Any, tmp_path: Path
) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path / "o"))
    parts = Parts(redis, tool_ca)
    tool_secrets = ToolSecrets(redis, parts.sealer)
    life = Lifecycle(
        redis,
        objects,
        CallArchive(redis),
        forget_call=[parts.outbox.forget_call],
        forget_tenant=[parts.outbox.forget_tenant, tool_secrets.forget],
    )
    route = await agent_with_number(redis, "t1", "desk", "+15555550402", 30)
    call_id = await a_call(redis, objects, route, CALLER, time.time())
    await parts.endpoint(customer.url())
    await parts.endpoint(customer.url(), tenant="t2")
    privacy.SEEN.secrets.add((await tool_secrets.rotate("t1", 1.0))[0])
    privacy.SEEN.secrets.add((await tool_secrets.rotate("t2", 1.0))[0])
    await parts.outbox.emit("t1", "call.transferred", call_id, {"to": CALLER})
    await parts.outbox.emit("t1", "call.transferred", "call_not_kept", {})
    await parts.outbox.emit("t2", "call.transferred", "call_t2", {})
    await life.offboard("t1", tmp_path / "export")
    assert await parts.endpoints.of_tenant("t1") == []
    assert not await redis.exists(
        keys.tools_secret("t1"), keys.webhook_endpoints("t1"), keys.tenant_deliveries("t1")
    )
    assert not await redis.exists(keys.call_deliveries("call_not_kept"))
    left = [
        await redis.hget(str(k), "tenant")
        async for k in redis.scan_iter(match="delivery:*")
        if not str(k).endswith(":attempts")
    ]
    assert left == ["t2"] and await redis.zcard(keys.deliveries_due()) == 1
    # The other tenant keeps all it had.
    assert len(await parts.endpoints.of_tenant("t2")) == 1
    assert (await tool_secrets.info("t2")).exists
