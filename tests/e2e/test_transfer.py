"""End to end: a caller asks for a person and is handed over, on each carrier, real models."""

from __future__ import annotations

import asyncio
import io
import wave
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.twilio.simulator import TwilioSimulator
from recordings.subjects import masked
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store, sinch_sim, telnyx_sim
from tests.helpers import BAKERY, auth, hear, new_tenant, say, wait_closed, words
from voice.engines import PHONE_RATE

pytestmark = pytest.mark.slow

US_DESK, EU_DESK = "+14155550123", "+33185001111"


async def desk_agent(redis: Redis, name: str, number: str, desk: str, mode: str = "cold") -> None:
    d = Directory(redis)
    await d.add_agent(
        Agent(
            name=name,
            prompt=BAKERY,
            transfer_number=desk,
            transfer_mode=mode,
            tools=("end_call", "transfer"),
            recording=True,
        )
    )
    await d.add_number(number, name)


def simulator(server: LiveServer, carrier: str, number: str) -> Any:
    if carrier == "twilio":
        return TwilioSimulator(
            server.url, ACCOUNT_SID, AUTH_TOKEN, to=number, api_port=server.twilio_api_port
        )
    return (telnyx_sim if carrier == "telnyx" else sinch_sim)(server, number)


async def whisper_of(url: str) -> bytes:
    """What Twilio does with ``<Number url>`` when the person answers: the TwiML, its audio."""
    async with httpx.AsyncClient(timeout=10) as c:
        twiml = await c.post(url, data={"CallSid": "CA" + "9" * 32})
        assert twiml.status_code == 200, twiml.text
        play = ET.fromstring(twiml.text).find("./Play")
        assert play is not None and play.text == url + ".wav", twiml.text
        audio = await c.get(play.text)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as w:
        assert w.getframerate() == PHONE_RATE
        return w.readframes(w.getnframes())


@pytest.mark.parametrize(
    ("carrier", "number", "desk", "mode"),
    [
        ("twilio", "+15555550741", US_DESK, "warm"),
        ("telnyx", "+15555550742", US_DESK, "cold"),
        ("sinch", "+33185001742", EU_DESK, "cold"),
    ],
)
async def test_a_caller_asking_for_a_person_is_transferred(
    live_server: LiveServer,
    live_redis: Redis,
    voice: Any,
    whisper: Any,
    carrier: str,
    number: str,
    desk: str,
    mode: str,
) -> None:
    await desk_agent(live_redis, f"desk-{carrier}", number, desk, mode)
    store = call_store(live_server, live_redis)
    sim = simulator(live_server, carrier, number)
    result = await sim.run([("ask", say(voice, "Can I talk to a person?"))])
    await wait_closed(store, result.call_id)
    assert result.closed_by_platform

    # The carrier got its documented transfer request to the agent's number, and no hang-up.
    if carrier == "twilio":
        [update] = sim.api.updates_of(sim.call_sid)
        dial = ET.fromstring(update["Twiml"])
        target = dial.find("./Dial/Number")
        assert target is not None and target.text == desk, update
        assert "Status" not in update
        # Warm: the person hears a summary of the call before the caller is bridged.
        summary = await whisper_of(target.get("url", ""))
        assert "caller" in words(hear(whisper, summary))
    elif carrier == "telnyx":
        sent = [(a, body) for c, a, body in sim.api.log if c == sim.ccid]
        assert [a for a, _ in sent] == ["answer", "transfer"], sent
        assert sent[1][1]["to"] == desk and "audio_url" not in sent[1][1]
    else:
        assert [p[1] for p in sim.api.patches] == [
            {"instructions": [], "action": {"name": "connectPstn", "number": desk}}
        ]

    # The transcript stops at the request; the recording is finished there.
    transcript = await store.transcript(result.call_id)
    assert transcript[-1].role == "caller" and "person" in words(transcript[-1].text), transcript
    assert store.objects is not None
    [recording] = await store.objects.of_call(result.call_id, "recording")
    assert recording.state == "final"
    events = await store.events(result.call_id)
    requested = [e.data for e in events if e.type == CallEventType.TRANSFER_REQUESTED]
    transferred = [e.data for e in events if e.type == CallEventType.TRANSFERRED]
    assert requested == [{"by": "phrase"}]
    assert transferred == [{"destination": masked(desk), "mode": mode, "by": "phrase"}]
    assert CallEventType.HANGUP_REQUESTED not in [e.type for e in events]


async def test_an_eu_number_over_twilio_is_refused_and_the_caller_hears_an_apology(
    live_server: LiveServer, live_redis: Redis, voice: Any, whisper: Any
) -> None:
    number = "+15555550743"
    await desk_agent(live_redis, "desk-eu", number, EU_DESK)
    store = call_store(live_server, live_redis)
    sim = simulator(live_server, "twilio", number)
    result = await sim.run(
        [("ask", say(voice, "Can I talk to a person?")), ("bye", say(voice, "Goodbye."))]
    )
    await wait_closed(store, result.call_id)

    asked, bye = result.turns
    start = int((asked.speech_end - result.started_at) * PHONE_RATE) * 2
    end = int((bye.speech_end - result.started_at) * PHONE_RATE) * 2
    heard = words(hear(whisper, bytes(result.agent_audio[start:end])))
    assert {"sorry", "transfer"} <= heard, heard
    assert not [u for u in sim.api.updates_of(sim.call_sid) if "Twiml" in u]
    events = await store.events(result.call_id)
    assert [e.data.get("code") for e in events if e.type == CallEventType.TRANSFER_REFUSED] == [
        "route_refused"
    ]
    assert CallEventType.TRANSFERRED not in [e.type for e in events]
    # The call went on: the goodbye was heard and ended it.
    hangups = [e.data for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert hangups and hangups[0]["by"] == "caller"


async def test_the_api_transfers_a_live_call_or_says_why_not(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant_id, admin = await new_tenant(live_server, "desk-api")
    store = call_store(live_server, live_redis)
    d = Directory(live_redis)
    cases = (("telnyx", "+15555550744", US_DESK, 202), ("twilio", "+15555550745", EU_DESK, 403))
    async with httpx.AsyncClient(base_url=live_server.url, headers=auth(admin), timeout=30) as c:
        for carrier, number, desk, status in cases:
            agent = Agent(
                name=f"api-{carrier}",
                prompt=BAKERY,
                tenant=tenant_id,
                transfer_number=desk,
                tools=("end_call", "transfer"),
            )
            await d.attach(number, await d.add_agent(agent))
            sim = simulator(live_server, carrier, number)
            # The caller stays on the line, silent, until the platform lets go of the call.
            call = asyncio.create_task(sim.run([("silence", bytes(PHONE_RATE * 2 * 60))]))
            call_id = await played(store, sim, carrier, call)
            r = await c.post(f"/v1/calls/{call_id}/transfer")
            assert r.status_code == status, r.text
            if status == 202:
                # Admitted: the answer comes before the hold phrase and the carrier's hand-over.
                assert r.json() == {
                    "call_id": call_id,
                    "action": "transfer",
                    "result": "transferring",
                }
                assert (await asyncio.wait_for(call, 60)).closed_by_platform
                sent = [(a, body.get("to")) for cc, a, body in sim.api.log if cc == sim.ccid]
                assert sent == [("answer", None), ("transfer", desk)], sent
                await wait_closed(store, call_id)
                events = await store.events(call_id)
                assert [e.data["by"] for e in events if e.type == CallEventType.TRANSFERRED] == [
                    "api"
                ]
            else:
                assert r.json()["code"] == "route_refused"
                hang = await c.post(f"/v1/calls/{call_id}/hangup")
                assert hang.status_code == 200, hang.text
                await asyncio.wait_for(call, 60)
            events = await store.events(call_id)
            assert [e.data for e in events if e.type == CallEventType.TRANSFER_REQUESTED] == [
                {"by": "api"}
            ]
            audit = (await c.get("/v1/audit")).json()["items"]
            assert call_id in [e["target"] for e in audit if e["action"] == "call.transfer"]


async def played(store: Any, sim: Any, carrier: str, call: asyncio.Task[Any]) -> str:
    """The call id once the caller has heard the announcement."""
    for _ in range(600):
        call_id = await store.by_carrier_id(
            carrier, sim.ccid if carrier == "telnyx" else sim.call_sid
        )
        kinds = [e.type for e in await store.events(call_id)] if call_id else []
        if CallEventType.ANNOUNCEMENT_PLAYED in kinds:
            return str(call_id)
        assert not call.done(), call
        await asyncio.sleep(0.1)
    raise AssertionError("the announcement never played")
