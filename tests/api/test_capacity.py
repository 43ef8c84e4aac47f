"""What one tenant can take of the shared machine: the phrase cache's byte budget (real Piper
audio), the per-tenant rate limit on configuration writes, and the caps on calls in progress
(per tenant and per process) answered with each carrier's busy answer, on a running platform
with real Redis."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from store import keys
from telephony.admission import ATTACH_WINDOW_S, Admission, ProcessSlots, member
from tenancy.settings import CALLS_PER_CORE, LimitSettings
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LiveServer,
    flushed,
    sinch_sim,
    start_server,
    stop_server,
    telnyx_sim,
)
from tests.helpers import auth, new_tenant
from voice.engines import Engines, PhraseCache, synthesize

WRITES_PER_MINUTE = 3
TENANT_INBOUND_CALLS = 1
MAX_CALLS = 4


# -- the phrase cache -------------------------------------------------------------------------


def test_phrase_cache_keeps_its_byte_budget_dropping_the_least_recently_used(voice: Any) -> None:
    a, b, c = (synthesize(voice, t) for t in ("Welcome to the bakery.", "Hello there.", "Bye."))
    cache = PhraseCache(len(a) + len(b))
    cache.put(("v", "a", 8000), a)
    cache.put(("v", "b", 8000), b)
    assert cache.get(("v", "a", 8000)) == a  # a is now the most recently used
    cache.put(("v", "c", 8000), c)
    assert ("v", "b", 8000) not in cache and ("v", "a", 8000) in cache and ("v", "c", 8000) in cache
    assert cache.bytes == len(a) + len(c) <= cache.max_bytes
    cache.put(("v", "huge", 8000), a + b + c)  # larger than the whole budget: not kept
    assert ("v", "huge", 8000) not in cache and cache.bytes <= cache.max_bytes


async def test_engines_phrases_stay_within_the_budget_and_come_back_when_dropped(
    voice: Any, voices: Any
) -> None:
    texts = [f"This is agent number {n}, speaking." for n in range(4)]
    one = len(synthesize(voice, texts[0]))
    # Only the Piper voice is needed to speak phrases; the other models stay unloaded here.
    engines = Engines(None, voices, None, None, phrases=PhraseCache(2 * one + one // 2))  # type: ignore[arg-type]
    for text in texts:
        await engines.phrase(text)
        assert engines.phrases.bytes <= engines.phrases.max_bytes
    assert engines.cached(texts[0]) is None and engines.cached(texts[-1]) is not None
    again = await engines.phrase(texts[0])  # dropped, so synthesized again
    assert len(again) > one // 2 and engines.cached(texts[0]) == again


# -- caps, unit level on real Redis -----------------------------------------------------------


def test_process_slots_hold_a_place_until_the_stream_or_the_window_ends() -> None:
    slots = ProcessSlots(2)
    assert slots.admit("twilio:CA1", 100.0) and slots.admit("twilio:CA1", 100.0)  # one call
    assert slots.admit("telnyx:v3:x", 100.0)
    assert not slots.admit("sinch:s1", 101.0)  # full
    slots.attach("twilio:CA1")
    # telnyx's call never streamed: its place lapsed with the window
    assert slots.admit("sinch:s1", 100.0 + ATTACH_WINDOW_S + 1)
    assert slots.in_progress(100.0 + 10 * ATTACH_WINDOW_S) == 1  # the running session stays
    slots.release("twilio:CA1")
    assert slots.in_progress(100.0 + 10 * ATTACH_WINDOW_S) == 0


async def test_a_tenant_call_that_ended_without_a_stream_stops_counting(redis: Redis) -> None:
    admission = Admission(redis, max_calls=10, tenant_inbound_calls=1, max_call_seconds=900)
    now = 1_800_000_000.0
    assert await admission.admit("t1", member("twilio", "CA1"), now) is None
    busy = await admission.admit("t1", member("twilio", "CA2"), now)
    assert busy is not None and busy.limit == "inbound_concurrent_calls"
    assert await admission.admit("t2", member("twilio", "CA3"), now) is None  # another tenant
    # CA1's caller hung up while it rang: its record says so (no media session ever ran)
    await redis.set(keys.carrier_call("twilio", "CA1"), "call-1")
    await redis.hset(keys.call("call-1"), "state", "canceled")
    assert await admission.admit("t1", member("twilio", "CA2"), now + 1) is None
    await admission.release("t1", member("twilio", "CA2"))
    assert await redis.zcard(keys.limit_inbound("t1")) == 0


def test_the_process_cap_defaults_to_the_measured_calls_per_usable_core() -> None:
    cores = len(os.sched_getaffinity(0))
    assert LimitSettings().max_calls == cores * CALLS_PER_CORE


def _admissions(result: str, reason: str) -> float:
    labels = {"result": result, "reason": reason}
    return REGISTRY.get_sample_value("bonmoniq_calls_admitted_total", labels) or 0.0


async def test_a_draining_process_refuses_new_calls_but_keeps_those_it_admitted(
    redis: Redis,
) -> None:
    admission = Admission(redis, max_calls=2, tenant_inbound_calls=5, max_call_seconds=900)
    now = 1_800_000_000.0
    admitted, draining = _admissions("admitted", ""), _admissions("refused", "draining")
    assert await admission.admit("t1", member("twilio", "CA1"), now) is None
    assert await admission.admit("t1", member("twilio", "CA1"), now) is None  # a repeat
    assert _admissions("admitted", "") == admitted + 1  # one call, counted once
    assert not admission.at_capacity(now)
    admission.drain()
    assert REGISTRY.get_sample_value("bonmoniq_draining") == 1
    busy = await admission.admit("t1", member("twilio", "CA2"), now)
    assert busy is not None and busy.limit == "draining"
    assert _admissions("refused", "draining") == draining + 1
    # The call admitted before the drain: its webhook again gets the same answer, its media
    # stream is taken, and it counts until it ends.
    assert await admission.admit("t1", member("twilio", "CA1"), now + 1) is None
    admission.attach(member("twilio", "CA1"))
    assert admission.slots.in_progress(now + 10 * ATTACH_WINDOW_S) == 1
    await admission.release("t1", member("twilio", "CA1"))
    assert admission.slots.in_progress(now) == 0


# -- on a running platform ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A platform with small caps, on its own Redis database."""
    server = start_server(
        redis_server.rsplit("/", 1)[0] + "/3", tmp_path_factory.mktemp("capped"),
        BONMONIQ_CONFIG_WRITES_PER_MINUTE=str(WRITES_PER_MINUTE),
        BONMONIQ_INBOUND_CONCURRENT_CALLS=str(TENANT_INBOUND_CALLS),
        BONMONIQ_MAX_CALLS=str(MAX_CALLS),
    )  # fmt: skip
    yield server
    stop_server(server)


@pytest.fixture
async def capped_redis(capped: LiveServer) -> AsyncIterator[Redis]:
    async with flushed(capped) as client:
        yield client


async def test_configuration_writes_beyond_the_rate_are_429_rate_limited(
    capped: LiveServer, capped_redis: Redis
) -> None:
    _, admin = await new_tenant(capped, "Busy Writer")
    _, other = await new_tenant(capped, "Quiet One")
    async with httpx.AsyncClient(base_url=capped.url, timeout=30) as c:
        for n in range(WRITES_PER_MINUTE):
            body = {"name": f"agent{n}", "system_prompt": "You sell bread."}
            r = await c.post("/v1/agents", json=body, headers=auth(admin))
            assert r.status_code == 201, r.text
        body = {"name": "one-too-many", "system_prompt": "You sell bread."}
        r = await c.post("/v1/agents", json=body, headers=auth(admin))
        assert r.status_code == 429, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        # The same bucket meters every configuration write of the tenant (keys too) ...
        r = await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin))
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        # ... reads are not metered, and another tenant is not affected
        assert (await c.get("/v1/agents", headers=auth(admin))).status_code == 200
        r = await c.post("/v1/agents", json=body, headers=auth(other))
        assert r.status_code == 201, r.text
        # an unauthenticated write uses nobody's tokens: still 401
        r = await c.post("/v1/agents", json=body, headers=auth("bmq_nope"))
        assert r.status_code == 401


async def _agent(redis: Redis, tenant: str, number: str) -> None:
    d = Directory(redis)
    await d.add_agent(Agent(name="desk", prompt="You answer the phone.", tenant=tenant))
    await d.add_number(number, "desk", tenant)


async def _refusal(redis: Redis, carrier: str, carrier_call_id: str) -> str:
    store = CallStore(redis)
    call_id = await store.by_carrier_id(carrier, carrier_call_id)
    assert call_id is not None
    record = await store.get(call_id)
    assert record is not None and record.state == "rejected"
    [event] = [e for e in await store.events(call_id) if e.type == CallEventType.REJECTED]
    return str(event.data["reason"])


async def test_the_call_beyond_a_cap_gets_each_carriers_busy_answer(
    capped: LiveServer, capped_redis: Redis
) -> None:
    # Twilio: the tenant's second call in progress is refused with <Reject reason="busy"/>
    await _agent(capped_redis, "tw", "+15555550601")
    first = TwilioSimulator(capped.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550601")
    r = await first.post_signed("/webhooks/twilio/voice", first.voice_params())
    assert r.status_code == 200 and ET.fromstring(r.text).find("Connect/Stream") is not None
    second = TwilioSimulator(capped.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550601")
    r = await second.post_signed("/webhooks/twilio/voice", second.voice_params())
    assert r.status_code == 200
    reject = ET.fromstring(r.text).find("Reject")
    assert reject is not None and reject.get("reason") == "busy"
    assert "inbound_concurrent_calls" in await _refusal(capped_redis, "twilio", second.call_sid)

    # Telnyx: actions/reject with cause USER_BUSY
    await _agent(capped_redis, "tx", "+15555550602")
    answered, refused = (telnyx_sim(capped, "+15555550602") for _ in range(2))
    async with answered.api:
        for sim in (answered, refused):
            r = await sim.deliver(sim.envelope("call.initiated", state="parked"))
            assert r.status_code == 200, r.text
        assert (await answered.api.next_for(answered.ccid, 15))[0] == "answer"
        action, body = await answered.api.next_for(refused.ccid, 15)
    assert (action, body["cause"]) == ("reject", "USER_BUSY") and body["command_id"]
    assert "inbound_concurrent_calls" in await _refusal(capped_redis, "telnyx", refused.ccid)

    # Sinch: the ICE is answered with the hangup action (nothing answered, nothing streamed)
    await _agent(capped_redis, "sn", "+33185001299")
    one, two = (sinch_sim(capped, "+33185001299") for _ in range(2))
    r = await one.deliver(one.ice())
    assert r.json()["action"]["name"] == "connectStream"
    r = await two.deliver(two.ice())
    assert r.json() == {"action": {"name": "hangup"}}
    assert "inbound_concurrent_calls" in await _refusal(capped_redis, "sinch", two.call_id)

    # Three calls are in progress; a fourth tenant's call takes the process's last place and
    # any tenant's next call is refused as busy too.
    for tenant, number in (("fourth", "+15555550604"), ("fifth", "+15555550605")):
        await _agent(capped_redis, tenant, number)
    fourth = TwilioSimulator(capped.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550604")
    r = await fourth.post_signed("/webhooks/twilio/voice", fourth.voice_params())
    assert ET.fromstring(r.text).find("Connect/Stream") is not None
    fifth = TwilioSimulator(capped.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550605")
    r = await fifth.post_signed("/webhooks/twilio/voice", fifth.voice_params())
    reject = ET.fromstring(r.text).find("Reject")
    assert reject is not None and reject.get("reason") == "busy"
    assert "max_calls" in await _refusal(capped_redis, "twilio", fifth.call_sid)
    assert "inbound call refused: busy" in capped.log.read_text()
    # Full, the process tells the load balancer to send new calls elsewhere.
    async with httpx.AsyncClient(base_url=capped.url) as c:
        r = await c.get("/readyz")
    assert r.status_code == 503 and r.json()["code"] == "at_capacity", r.text
    # Repeats of an admitted call's webhook are the same call, never refused as a new one.
    r = await first.post_signed("/webhooks/twilio/voice", first.voice_params())
    assert ET.fromstring(r.text).find("Connect/Stream") is not None
    # ... and once it is talking, a repeat neither frees its place nor takes another.
    store = CallStore(capped_redis)
    call_id = await store.by_carrier_id("twilio", first.call_sid)
    assert call_id is not None
    await store.advance(call_id, "in-progress", time.time())
    r = await first.post_signed("/webhooks/twilio/voice", first.voice_params())
    assert r.status_code == 200
    again = TwilioSimulator(capped.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550601")
    r = await again.post_signed("/webhooks/twilio/voice", again.voice_params())
    reject = ET.fromstring(r.text).find("Reject")
    assert reject is not None and reject.get("reason") == "busy", r.text
