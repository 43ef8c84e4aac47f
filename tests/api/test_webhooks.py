"""Twilio webhooks and the media WebSocket of a running platform: what is refused, and how."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.twilio.signature import compute_signature
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer
from tests.helpers import data_keys

VOICE = "/webhooks/twilio/voice"


@pytest.fixture
async def demo(live_redis: Redis) -> Directory:
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt="You are a bakery receptionist."))
    await d.add_number("+15555550100", "bakery")
    return d


def sim(server: LiveServer, to: str = "+15555550100") -> TwilioSimulator:
    return TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to=to)


async def post(
    server: LiveServer, path: str, params: dict[str, str], signature: str | None
) -> httpx.Response:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with httpx.AsyncClient() as c:
        return await c.post(server.url + path, data=params, headers=headers)


@pytest.mark.parametrize(
    "forge",
    [
        lambda url, params: None,  # no signature at all
        lambda url, params: "bm90IGEgc2lnbmF0dXJl",  # garbage
        lambda url, params: compute_signature(url, params.items(), "wrong-token"),
        lambda url, params: compute_signature(
            "https://proxy.example.com" + VOICE, params.items(), AUTH_TOKEN
        ),
        lambda url, params: compute_signature(
            url, {**params, "To": "+15555550999"}.items(), AUTH_TOKEN
        ),
    ],
    ids=["missing", "garbage", "wrong-token", "other-url", "other-params"],
)
async def test_forged_voice_webhook_is_403_and_writes_nothing(
    live_server: LiveServer, live_redis: Redis, demo: Directory, forge
) -> None:  # type: ignore[no-untyped-def]
    before = len(await data_keys(live_redis))
    s = sim(live_server)
    params = s.voice_params()
    r = await post(live_server, VOICE, params, forge(live_server.url + VOICE, params))
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "signature_invalid"
    assert len(await data_keys(live_redis)) == before


async def test_other_account_is_refused(
    live_server: LiveServer, live_redis: Redis, demo: Directory
) -> None:
    before = len(await data_keys(live_redis))
    s = sim(live_server)
    s.account_sid = "AC" + "9" * 32
    r = await s.post_signed(VOICE, s.voice_params())
    assert r.status_code == 403 and r.json()["code"] == "signature_invalid"
    assert len(await data_keys(live_redis)) == before


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"CallSid": ""}, "CallSid"),
        ({"CallSid": "XX123"}, "call SID"),
        ({"To": ""}, "To"),
        ({"CallStatus": "dancing"}, "CallStatus"),
    ],
)
async def test_malformed_voice_webhook_is_400(
    live_server: LiveServer, live_redis: Redis, demo: Directory, change: dict[str, str], detail: str
) -> None:
    before = len(await data_keys(live_redis))
    s = sim(live_server)
    r = await s.post_signed(VOICE, {**s.voice_params(), **change})
    assert r.status_code == 400 and r.json()["code"] == "webhook_malformed"
    assert detail in r.json()["detail"]
    assert len(await data_keys(live_redis)) == before


async def test_duplicate_voice_webhook_has_one_effect(
    live_server: LiveServer, live_redis: Redis, demo: Directory
) -> None:
    s = sim(live_server)
    first, second = await asyncio.gather(
        *(s.post_signed(VOICE, s.voice_params()) for _ in range(2))
    )
    third = await s.post_signed(VOICE, s.voice_params())
    assert first.status_code == second.status_code == third.status_code == 200
    assert first.text == second.text == third.text  # same call id in the same TwiML
    assert await live_redis.zcard("calls") == 1
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    events = await CallStore(live_redis).events(call_id)
    assert [e.type for e in events] == [CallEventType.INBOUND]


async def test_voice_webhook_answers_with_a_stream_to_our_socket(
    live_server: LiveServer, demo: Directory
) -> None:
    s = sim(live_server)
    r = await s.post_signed(VOICE, s.voice_params())
    assert r.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(r.text)
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == live_server.url.replace("http", "ws") + "/media/twilio"
    assert "?" not in stream.get("url", "")
    assert stream.get("statusCallback") == live_server.url + "/webhooks/twilio/status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert (
        params["call_id"].startswith("call_")
        and params["agent"] == "bakery"
        and params["tenant"] == "default"
    )


async def test_unknown_number_gets_an_apology_and_a_hang_up(
    live_server: LiveServer, live_redis: Redis, demo: Directory
) -> None:
    s = sim(live_server, to="+15555550999")
    r = await s.post_signed(VOICE, s.voice_params())
    root = ET.fromstring(r.text)
    assert "not in service" in (root.findtext("Say") or "")
    assert root.find("Say").get("language") == "en-US"  # type: ignore[union-attr]
    assert root.find("Hangup") is not None and root.find("Connect") is None
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    record = await CallStore(live_redis).get(call_id)
    assert record is not None and record.state == "rejected"
    assert [e.type for e in await CallStore(live_redis).events(call_id)] == [CallEventType.REJECTED]


async def test_a_final_status_before_the_call_is_remembered_not_applied(
    live_server: LiveServer, live_redis: Redis, demo: Directory
) -> None:
    s = sim(live_server)
    r = await s.status("completed", 1)
    assert r.status_code == 204
    assert await live_redis.zcard("calls") == 0
    assert await live_redis.get(f"early:twilio:{s.call_sid}") == "completed"
    # The voice webhook arriving late does not start a call that is already over.
    r = await s.post_signed(VOICE, s.voice_params())
    assert ET.fromstring(r.text).find("Connect") is None
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    record = await CallStore(live_redis).get(call_id)
    assert record is not None and record.state == "completed"


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http", "ws") + "/media/twilio"


@pytest.mark.parametrize("signature", [None, "forged", "other-url"])
async def test_media_upgrade_without_valid_signature_is_refused(
    live_server: LiveServer, signature: str | None
) -> None:
    url = ws_url(live_server)
    headers = {}
    if signature == "forged":
        headers["X-Twilio-Signature"] = compute_signature(url, [], "wrong")
    elif signature == "other-url":
        headers["X-Twilio-Signature"] = compute_signature(
            "wss://elsewhere.example/media/twilio", [], AUTH_TOKEN
        )
    with pytest.raises(websockets.InvalidStatus) as e:
        async with websockets.connect(url, additional_headers=headers):
            pass
    assert e.value.response.status_code == 403


async def _signed_ws(server: LiveServer) -> websockets.ClientConnection:
    url = ws_url(server)
    return await websockets.connect(
        url, additional_headers={"X-Twilio-Signature": compute_signature(url, [], AUTH_TOKEN)}
    )


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (["{oops"], 1007),
        ([json.dumps({"event": "media", "media": {"payload": ""}})], 1007),
        ([json.dumps({"event": "connected"}), json.dumps({"event": "start", "start": {}})], 1007),
        (
            [
                json.dumps(
                    {
                        "event": "start",
                        "streamSid": "MZ1",
                        "start": {
                            "callSid": "CAnope",
                            "customParameters": {"call_id": "call_nope"},
                        },
                    }
                )
            ],
            1008,
        ),
    ],
    ids=["bad-json", "media-before-start", "empty-start", "unknown-stream"],
)
async def test_bad_stream_start_is_a_clean_close(
    live_server: LiveServer, live_redis: Redis, messages: list[str], code: int
) -> None:
    ws = await _signed_ws(live_server)
    for m in messages:
        await ws.send(m)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == code
    assert len(await data_keys(live_redis)) == 0


async def test_a_second_stream_for_the_same_call_is_refused(
    live_server: LiveServer, live_redis: Redis, demo: Directory
) -> None:
    s = sim(live_server)
    r = await s.post_signed(VOICE, s.voice_params())
    call_id = ET.fromstring(r.text).find("./Connect/Stream/Parameter[@name='call_id']").get("value")  # type: ignore[union-attr]
    start = json.dumps(
        {
            "event": "start",
            "streamSid": "MZ1",
            "start": {"callSid": s.call_sid, "customParameters": {"call_id": call_id}},
        }
    )
    first = await _signed_ws(live_server)
    await first.send(start)
    await asyncio.sleep(0.5)
    second = await _signed_ws(live_server)
    await second.send(start.replace("MZ1", "MZ2"))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(second.recv(), 5)
    assert second.close_code == 1008
    await first.close()


async def test_subprocessor_register_is_public(live_server: LiveServer) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.get(live_server.url + "/v1/subprocessors")
    assert r.status_code == 200 and "public" in r.headers["cache-control"]
    body = r.json()
    assert body["last_updated"] == "2026-06-21"
    names = [s["name"] for s in body["subprocessors"]]
    assert "Sinch AB" in names and "Twilio Inc." in names and len(names) == 7
    assert not any("Meta" in n for n in names)
