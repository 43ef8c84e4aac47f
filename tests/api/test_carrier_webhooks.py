"""Telnyx and Sinch webhooks on a running platform: forged, tampered, stale, repeated, unordered."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from routing import Agent, Directory
from tests.conftest import LiveServer, sinch_sim, telnyx_sim
from tests.helpers import data_keys

US = "+15555550300"
FR = "+33185001234"


@pytest.fixture
async def agents(live_redis: Redis) -> Directory:
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt="You are a bakery receptionist."))
    await d.add_number(US, "bakery")
    await d.add_number(FR, "bakery")
    return d


@pytest.mark.parametrize("forgery", ["other-key", "tampered", "stale", "future", "unsigned"])
async def test_forged_tampered_or_stale_telnyx_webhooks_write_nothing(
    live_server: LiveServer, live_redis: Redis, agents: Directory, forgery: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sim = telnyx_sim(live_server, US)
    body = sim.envelope("call.initiated", state="parked")
    headers = sim.sign(body)
    if forgery == "other-key":
        sim.key = Ed25519PrivateKey.generate()
        headers = sim.sign(body)
    elif forgery == "tampered":
        body = body.replace(US.encode(), b"+15555550399")
    elif forgery in ("stale", "future"):
        import time

        headers = sim.sign(body, int(time.time()) + (-400 if forgery == "stale" else 400))
    else:
        headers = {"content-type": "application/json"}
    before = len(await data_keys(live_redis))
    r = await sim.deliver(body, headers)
    assert r.status_code == 403 and r.json()["code"] == "signature_invalid"
    assert len(await data_keys(live_redis)) == before


@pytest.mark.parametrize("forgery", ["other-secret", "tampered", "stale", "other-path", "unsigned"])
async def test_forged_tampered_or_stale_sinch_callbacks_write_nothing(
    live_server: LiveServer, live_redis: Redis, agents: Directory, forgery: str
) -> None:
    sim = sinch_sim(live_server, FR)
    body = sim.ice()
    headers = sim.sign(body)
    if forgery == "other-secret":
        sim.app_secret = "c29tZSBvdGhlciBzZWNyZXQ="
        headers = sim.sign(body)
    elif forgery == "tampered":
        body = body.replace(FR.encode(), b"+33185009999")
    elif forgery == "stale":
        headers = sim.sign(body, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6))
    elif forgery == "other-path":
        sim.public_url += "/elsewhere"
        headers = sim.sign(body)
        sim.public_url = live_server.url
    else:
        headers = {"content-type": "application/json"}
    before = len(await data_keys(live_redis))
    r = await sim.deliver(body, headers)
    assert r.status_code == 403 and r.json()["code"] == "signature_invalid"
    assert len(await data_keys(live_redis)) == before


async def test_telnyx_call_initiated_20_times_at_once_is_answered_once(
    live_server: LiveServer, live_redis: Redis, agents: Directory
) -> None:
    sim = telnyx_sim(live_server, US)
    body = sim.envelope("call.initiated", state="parked")
    headers = sim.sign(body)
    async with sim.api:
        answers = await asyncio.gather(*(sim.deliver(body, headers) for _ in range(20)))
        assert {r.status_code for r in answers} == {200}
        await asyncio.sleep(0.5)
    assert [a for _, a, _ in sim.api.log] == ["answer"]
    assert await live_redis.zcard("calls") == 1
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    record = await CallStore(live_redis).get(call_id)
    assert record is not None and record.carrier == "telnyx"
    assert record.routing == {
        "carrier": "telnyx",
        "region": "international",
        "country": "US",
        "reason": "inbound through telnyx, which holds the called number",
    }


async def test_sinch_ice_20_times_at_once_is_one_call(
    live_server: LiveServer, live_redis: Redis, agents: Directory
) -> None:
    sim = sinch_sim(live_server, FR)
    body = sim.ice()
    headers = sim.sign(body)
    answers = await asyncio.gather(*(sim.deliver(body, headers) for _ in range(20)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.text for r in answers}) == 1  # the same SVAML, with the same call id
    svaml = answers[0].json()
    assert svaml["action"]["name"] == "connectStream"
    assert (
        svaml["action"]["destination"]["endpoint"]
        == live_server.url.replace("http", "ws") + "/media/sinch"
    )
    assert await live_redis.zcard("calls") == 1
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    record = await CallStore(live_redis).get(call_id)
    assert record is not None and record.routing is not None
    assert (record.routing["carrier"], record.routing["region"], record.routing["country"]) == (
        "sinch",
        "eu",
        "FR",
    )


async def test_telnyx_final_state_does_not_depend_on_delivery_order(
    live_server: LiveServer, live_redis: Redis, agents: Directory
) -> None:
    sim = telnyx_sim(live_server, US)
    initiated = sim.envelope("call.initiated", state="parked")
    hangup = sim.envelope("call.hangup", hangup_cause="normal_clearing", hangup_source="caller")
    answered = sim.envelope("call.answered", state="answered")
    async with sim.api:
        for body in (hangup, answered, initiated):  # the reverse of the real order
            assert (await sim.deliver(body)).status_code == 200
        await asyncio.sleep(0.3)
    assert sim.api.log == []  # a call that is already over is not answered
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    store = CallStore(live_redis)
    record = await store.get(call_id)
    assert record is not None and record.state == "completed"
    events = await store.events(call_id)
    assert (
        events[0].type == CallEventType.REJECTED and "already completed" in events[0].data["reason"]
    )


async def test_eu_number_arriving_on_a_us_carrier_is_refused(
    live_server: LiveServer, live_redis: Redis, agents: Directory
) -> None:
    sim = telnyx_sim(live_server, FR)  # a French number on Telnyx: against the DPA
    async with sim.api:
        assert (
            await sim.deliver(sim.envelope("call.initiated", state="parked"))
        ).status_code == 200
        action, _ = await sim.api.next_for(sim.ccid, 5)
    assert action == "hangup"
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    events = await CallStore(live_redis).events(call_id)
    assert events[0].type == CallEventType.REJECTED
    assert "may only be carried by sinch" in events[0].data["reason"]


async def test_sinch_unknown_number_gets_an_apology(
    live_server: LiveServer, live_redis: Redis, agents: Directory
) -> None:
    sim = sinch_sim(live_server, "+33185009999")
    r = await sim.deliver(sim.ice())
    svaml = r.json()
    assert svaml["action"] == {"name": "hangup"} and svaml["instructions"][0]["name"] == "say"
    # A French number: said in French, by Sinch's French voice.
    assert svaml["instructions"][0]["locale"] == "fr-FR"
    assert "n'est pas en service" in svaml["instructions"][0]["text"]
    ace = await sim.deliver(sim.body("ace"))
    assert ace.json() == {"action": {"name": "continue"}}
    assert (await sim.deliver(sim.body("dice", reason="CALLERHANGUP"))).status_code == 200
    events = await CallStore(live_redis).events((await live_redis.zrange("calls", 0, -1))[0])
    assert [e.type for e in events][0] == CallEventType.REJECTED


async def test_malformed_telnyx_and_sinch_bodies_are_400(
    live_server: LiveServer, live_redis: Redis
) -> None:
    t, s = telnyx_sim(live_server, US), sinch_sim(live_server, FR)
    for sim in (t, s):
        body = b'{"data": "nope"}' if sim is t else b'{"event": "party", "callid": "x"}'
        r = await sim.deliver(body)
        assert r.status_code == 400 and r.json()["code"] == "webhook_malformed"
    assert len(await data_keys(live_redis)) == 0
