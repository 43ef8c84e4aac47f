"""``POST /v1/calls`` with ``voicemail`` on a running platform: validation, the carriers' dial
parameters, and their answering-machine webhooks written on the call (``answered_by``)."""

from __future__ import annotations

import json

import httpx
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.twilio.simulator import TwilioSimulator
from routing.directory import Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, sinch_sim, telnyx_sim
from tests.helpers import FROM, auth, carrier_up, tenant_with_number

TO = "+15555550777"
MESSAGE = "Hello, this is the bakery: your cake is ready."


@pytest.mark.parametrize(
    "voicemail",
    [
        {"action": "leave_message"},
        {"action": "leave_message", "message": "   "},
        {"action": "leave_message", "message": "x" * 501},
        {"action": "hang_up", "message": "hi"},
        {"action": "call_back"},
        {"action": "hang_up", "beep": True},
        "hang_up",
    ],
)
async def test_a_bad_voicemail_choice_is_refused_and_nothing_is_dialled(
    live_server: LiveServer, live_redis: Redis, voicemail: object
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "VM")
    sim = telnyx_sim(live_server, to=TO)
    async with sim.api, httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post(
            "/v1/calls",
            json={"from_number": FROM, "to": TO, "voicemail": voicemail},
            headers=auth(admin),
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    assert not [a for _, a, _ in sim.api.log if a == "dial"]


async def test_telnyx_detection_is_asked_and_its_result_shown(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "VM")
    sim = telnyx_sim(live_server, to=TO)
    async with sim.api, httpx.AsyncClient(base_url=live_server.url) as c:
        body = {
            "from_number": FROM,
            "to": TO,
            "voicemail": {"action": "leave_message", "message": MESSAGE},
        }
        r = await c.post("/v1/calls", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        call = r.json()
        assert call["voicemail"] == {"action": "leave_message", "answered_by": None}
        assert MESSAGE not in r.text
        ccid, dial = await sim.api.next_dial(5)
        assert dial["answering_machine_detection"] == "detect_beep"
        # Telnyx reports: a person answered.
        sim.ccid = ccid
        event = sim.envelope("call.machine.detection.ended", direction="outgoing", result="human")
        assert (await sim.deliver(event)).status_code == 200
        got = (await c.get(f"/v1/calls/{call['call_id']}", headers=auth(admin))).json()
        assert got["voicemail"] == {"action": "leave_message", "answered_by": "human"}
        assert MESSAGE not in json.dumps(got)
        seen = [e for e in got["events"] if e["type"] == CallEventType.VOICEMAIL]
        assert seen[0]["data"]["answered_by"] == "human"
        assert seen[0]["data"]["action"] == "leave_message"
        # Without voicemail: no detection is asked (it costs money).
        r = await c.post("/v1/calls", json={"from_number": FROM, "to": TO}, headers=auth(admin))
        assert r.status_code == 201 and r.json()["voicemail"] is None
        _, plain = await sim.api.next_dial(5)
        assert "answering_machine_detection" not in plain


async def test_twilio_detection_is_asynchronous_and_its_callback_signed(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "VM")
    d = Directory(live_redis)
    route = await d.lookup(FROM)
    assert route is not None
    await d.attach(FROM, route.agent, {"carrier": "twilio", "carrier_id": "PN" + "1" * 32})
    await carrier_up(live_server, "twilio")
    sim = TwilioSimulator(
        live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=TO, api_port=live_server.twilio_api_port
    )
    assert sim.api is not None
    async with sim.api, httpx.AsyncClient(base_url=live_server.url) as c:
        body = {"from_number": FROM, "to": TO, "voicemail": {"action": "hang_up"}}
        r = await c.post("/v1/calls", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        call_id = r.json()["call_id"]
        sim.call_sid, dial = sim.api.dialled[-1]
        assert dial["MachineDetection"] == "Enable" and dial["AsyncAmd"] == "true"
        assert dial["AsyncAmdStatusCallback"] == live_server.url + "/webhooks/twilio/amd"
        amd = {"CallSid": sim.call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_start"}
        forged = await c.post(
            "/webhooks/twilio/amd", data=amd, headers={"X-Twilio-Signature": "bm9wZQ=="}
        )
        assert forged.status_code == 403
        record = await CallStore(live_redis).get(call_id)
        assert record is not None and record.answered_by == ""
        assert (await sim.post_signed("/webhooks/twilio/amd", amd)).status_code == 204
        got = (await c.get(f"/v1/calls/{call_id}", headers=auth(admin))).json()
        assert got["voicemail"] == {"action": "hang_up", "answered_by": "machine"}


async def test_sinch_detection_is_asked_in_the_callout_and_read_from_the_ace(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "VM")
    d = Directory(live_redis)
    route = await d.lookup(FROM)
    assert route is not None
    await d.attach(FROM, route.agent, {"carrier": "sinch", "carrier_id": FROM})
    await carrier_up(live_server, "sinch")
    sim = sinch_sim(live_server, to="+33612345678")
    async with sim.api, httpx.AsyncClient(base_url=live_server.url) as c:
        body = {
            "from_number": FROM,
            "to": "+33612345678",
            "voicemail": {"action": "leave_message", "message": MESSAGE},
        }
        r = await c.post("/v1/calls", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        call_id = r.json()["call_id"]
        sim.call_id, callout = sim.api.callouts[-1]
        action = json.loads(callout["customCallout"]["ice"])["action"]
        assert action["name"] == "connectStream"
        assert action["amd"] == {"enabled": True, "async": False}
        assert MESSAGE not in json.dumps(callout)
        ace = sim.body("ace", amd={"status": "machine", "reason": "longgreeting", "duration": 4})
        answer = await sim.deliver(ace)
        assert answer.status_code == 200 and answer.json()["action"]["name"] == "continue"
        got = (await c.get(f"/v1/calls/{call_id}", headers=auth(admin))).json()
        assert got["voicemail"] == {"action": "leave_message", "answered_by": "machine"}
        assert got["state"] == "in-progress"
