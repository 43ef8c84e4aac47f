"""Voicemail detection end to end with the real models: an outbound call answered by a machine
(the carrier's fake reports it) either gets the message after the beep (Telnyx) or is hung up
at once (Telnyx's Call Control; Twilio: its stream closed)."""

from __future__ import annotations

import asyncio
import audioop
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.simulation import RATE, SimulationResult
from carriers.twilio.simulator import TwilioSimulator
from routing.directory import Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, telnyx_sim
from tests.helpers import FROM, auth, carrier_up, tenant_with_number, wait_closed
from voice.voicemail import message_text

pytestmark = pytest.mark.slow

TO = "+15555550778"
MESSAGE = "Your order is ready for pickup."


async def until_event(store: CallStore, call_id: str, kind: CallEventType, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if any(e.type == kind for e in await store.events(call_id)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} event for {call_id}")


async def outbound_call(
    server: LiveServer, redis: Redis, voicemail: dict[str, str], detector: Any
) -> tuple[str, SimulationResult, dict[str, Any], list[str]]:
    """Place a call with ``voicemail``; the far end answers; ``detector(sim, call_id)`` plays
    the carrier's detection webhooks meanwhile. The call, what the far end heard, the call as
    the API shows it, and the Call Control commands the platform sent for the call."""
    _, admin = await tenant_with_number(server, redis, "VM")
    sim = telnyx_sim(server, to=TO)
    async with sim.api:
        async with httpx.AsyncClient(base_url=server.url) as c:
            body = {"from_number": FROM, "to": TO, "voicemail": voicemail}
            r = await c.post("/v1/calls", json=body, headers=auth(admin))
            assert r.status_code == 201, r.text
        call_id = r.json()["call_id"]
        answered = sim.answer_outbound([], greeting_timeout=90, quiet_after_reply=60)
        result, _ = await asyncio.wait_for(asyncio.gather(answered, detector(sim, call_id)), 120)
    async with httpx.AsyncClient(base_url=server.url) as c:
        got = (await c.get(f"/v1/calls/{call_id}", headers=auth(admin))).json()
    return call_id, result, got, [a for c, a, _ in sim.api.log if c == sim.ccid]


def speech_after(result: SimulationResult, at: float) -> float:
    """Seconds of agent speech the far end heard after the monotonic time ``at``."""
    start = max(0, int((at - result.started_at) * RATE) * 2)
    audio = bytes(result.agent_audio[start:])
    frame = RATE * 2 // 50  # 20 ms
    loud = sum(
        1 for i in range(0, len(audio) - frame, frame) if audioop.rms(audio[i : i + frame], 2) > 300
    )
    return loud * 0.02


async def test_a_message_is_left_after_the_beep(live_server: LiveServer, live_redis: Redis) -> None:
    store = CallStore(live_redis)
    beep_at: list[float] = []

    async def machine_then_beep(sim: Any, call_id: str) -> None:
        await until_event(store, call_id, CallEventType.ANNOUNCEMENT_PLAYED, 60)
        detected = sim.envelope(
            "call.machine.detection.ended", direction="outgoing", result="machine"
        )
        assert (await sim.deliver(detected)).status_code == 200
        await asyncio.sleep(1.5)  # the machine's greeting goes on; the agent stays silent
        beep_at.append(time.monotonic())
        beep = sim.envelope(
            "call.machine.greeting.ended", direction="outgoing", result="beep_detected"
        )
        assert (await sim.deliver(beep)).status_code == 200

    voicemail = {"action": "leave_message", "message": MESSAGE}
    call_id, result, got, commands = await outbound_call(
        live_server, live_redis, voicemail, machine_then_beep
    )
    await wait_closed(store, call_id)
    assert result.closed_by_platform, live_server.tail()
    assert got["voicemail"] == {"action": "leave_message", "answered_by": "machine"}
    # The message was spoken after the beep, then the platform hung up through Call Control.
    assert speech_after(result, beep_at[0]) > 1.0, live_server.tail()
    assert commands[-1] == "hangup", commands
    events = await store.events(call_id)
    ended = [e for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert ended and ended[0].data["reason"] == "voicemail message", events
    said = [e.data["chars"] for e in events if e.type == CallEventType.AGENT_TURN]
    assert len(message_text("en", MESSAGE)) in said, events


async def test_a_machine_is_hung_up_on_at_once(live_server: LiveServer, live_redis: Redis) -> None:
    store = CallStore(live_redis)

    async def machine(sim: Any, call_id: str) -> None:
        await until_event(store, call_id, CallEventType.MEDIA_CONNECTED, 60)
        detected = sim.envelope(
            "call.machine.detection.ended", direction="outgoing", result="machine"
        )
        assert (await sim.deliver(detected)).status_code == 200

    call_id, result, got, commands = await outbound_call(
        live_server, live_redis, {"action": "hang_up"}, machine
    )
    assert result.closed_by_platform, live_server.tail()
    assert commands[-1] == "hangup", commands
    assert got["voicemail"] == {"action": "hang_up", "answered_by": "machine"}
    events = await store.events(call_id)
    ended = [e for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert ended and ended[0].data["reason"] == "voicemail", events
    # What was captured is discarded, but nobody objected: no objection is recorded.
    assert CallEventType.RECORDING_OBJECTED not in [e.type for e in events], events
    assert CallEventType.VOICEMAIL in [e.type for e in events], events


async def test_twilio_a_machine_is_hung_up_on_by_closing_the_stream(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "VM")
    d = Directory(live_redis)
    route = await d.lookup(FROM)
    assert route is not None
    await d.attach(FROM, route.agent, {"carrier": "twilio", "carrier_id": "PN" + "2" * 32})
    await carrier_up(live_server, "twilio")
    store = CallStore(live_redis)
    sim = TwilioSimulator(
        live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=TO, api_port=live_server.twilio_api_port
    )
    assert sim.api is not None

    async def machine(call_id: str) -> None:
        await until_event(store, call_id, CallEventType.MEDIA_CONNECTED, 60)
        amd = {"CallSid": sim.call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_start"}
        assert (await sim.post_signed("/webhooks/twilio/amd", amd)).status_code == 204

    async with sim.api, httpx.AsyncClient(base_url=live_server.url) as c:
        body = {"from_number": FROM, "to": TO, "voicemail": {"action": "hang_up"}}
        r = await c.post("/v1/calls", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        call_id = r.json()["call_id"]
        answered = sim.answer_outbound([], greeting_timeout=90, quiet_after_reply=60)
        result, _ = await asyncio.wait_for(asyncio.gather(answered, machine(call_id)), 120)
    # Closing the stream is Twilio's hang-up: no TwiML follows <Connect>.
    assert result.closed_by_platform and result.call_id == call_id, live_server.tail()
    await wait_closed(store, call_id)
    record = await store.get(call_id)
    assert record is not None and record.answered_by == "machine"
    ended = [e for e in await store.events(call_id) if e.type == CallEventType.HANGUP_REQUESTED]
    assert ended and ended[0].data["reason"] == "voicemail"
