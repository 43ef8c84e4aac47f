"""End to end over Telnyx and Sinch: each carrier's protocol, the same pipeline, real models."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from calls.events import CallEventType, order_violations
from carriers.simulation import trim_silence
from routing import Agent, Directory
from tests.conftest import LiveServer, call_store, sinch_sim, telnyx_sim
from tests.helpers import BAKERY, wait_closed, words
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("carrier", "number", "region"),
    [("telnyx", "+15555550300", "international"), ("sinch", "+33185001234", "eu")],
)
async def test_a_question_over_each_carrier(
    live_server: LiveServer, live_redis: Redis, voice, carrier: str, number: str, region: str
) -> None:  # type: ignore[no-untyped-def]
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY))
    await d.add_number(number, "bakery")
    store = call_store(live_server, live_redis)
    sim = (telnyx_sim if carrier == "telnyx" else sinch_sim)(live_server, number)
    lines = [
        (s, trim_silence(await asyncio.to_thread(synthesize, voice, s, PHONE_RATE)))
        for s in ("What time do you open on Saturday?", "Goodbye.")
    ]
    result = await sim.run(lines)
    await wait_closed(store, result.call_id)

    transcript = await store.transcript(result.call_id)
    caller = [t.text for t in transcript if t.role == "caller"]
    assert caller and {"open", "saturday"} <= words(caller[0]), transcript
    assert result.turns[0].latency_s is not None and result.turns[0].latency_s > 0
    assert any(t.role == "agent" and t.at > 0 for t in transcript[2:]), transcript  # an answer
    events = await store.events(result.call_id)
    assert order_violations(events) == []
    kinds = [e.type for e in events]
    assert kinds.index(CallEventType.ANNOUNCEMENT_PLAYED) < kinds.index(CallEventType.AGENT_TURN)
    # The platform hung up on the goodbye through the carrier's REST API, then the carrier
    # reported the end of the call.
    if carrier == "telnyx":
        assert [a for c, a, _ in sim.api.log if c == sim.ccid][-1] == "hangup"
    else:
        assert sim.api.patches and sim.api.patches[-1][1]["action"]["name"] == "hangup"
    record = await store.get(result.call_id)
    assert record is not None and record.state == "completed" and record.carrier == carrier
    assert record.routing is not None and (record.routing["carrier"], record.routing["region"]) == (
        carrier,
        region,
    )


async def test_sinch_gets_heartbeats_while_the_agent_is_silent(
    live_server: LiveServer, live_redis: Redis
) -> None:
    import json

    import websockets

    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY))
    await d.add_number("+33185001234", "bakery")
    sim = sinch_sim(live_server, "+33185001234")
    async with sim.api:
        svaml = (await sim.deliver(sim.ice())).json()
        action = svaml["action"]
        headers = {h["key"]: h["value"] for h in action["callHeaders"]}
        async with websockets.connect(action["destination"]["endpoint"]) as ws:
            await ws.send(
                json.dumps(
                    {
                        "command": "connect",
                        "version": 1,
                        "callId": sim.call_id,
                        "codec": "PCM",
                        "sampleRate": 16000,
                        "callHeaders": headers,
                    }
                )
            )
            assert json.loads(await ws.recv()) == {"command": "answer"}
            commands = []
            deadline = asyncio.get_running_loop().time() + 25
            while asyncio.get_running_loop().time() < deadline and "heartbeat" not in commands:
                msg = await asyncio.wait_for(ws.recv(), 25)
                if isinstance(msg, str):
                    commands.append(json.loads(msg).get("command"))
                await ws.send(bytes(640))  # the caller's silence, 20 ms at a time
            assert "heartbeat" in commands


async def test_an_outbound_call_through_telnyx(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    from app.settings import Settings
    from carriers.base import Carrier
    from carriers.registry import Carriers
    from carriers.telnyx.control import TelnyxAccount
    from carriers.telnyx.kit import TelnyxKit
    from routing.policy import Health, Policy
    from telephony.service import Telephony
    from tests.conftest import TELNYX_API_KEY, TELNYX_PUBLIC_KEY

    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY))
    ours = "+13125550142"
    await d.add_number(ours, "bakery", holding={"carrier": "telnyx", "carrier_id": "pn-1"})
    store = call_store(live_server, live_redis)
    kit = TelnyxKit(
        TelnyxAccount(
            TELNYX_API_KEY,
            TELNYX_PUBLIC_KEY,
            "e2e-connection",
            f"http://127.0.0.1:{live_server.telnyx_api_port}/v2",
        )
    )
    # The operator's side of `bonmoniq calls place`, against the running platform's state.
    settings = Settings(public_url=live_server.url)
    telephony = Telephony(
        d,
        store,
        Policy(),
        Carriers([kit]),
        lambda now: Health(),
        settings,
        max_call_seconds=settings.call.call_max_seconds,
    )
    callee = telnyx_sim(live_server, "+14155550199")
    line = trim_silence(
        await asyncio.to_thread(
            synthesize, voice, "Yes, what time do you open on Saturday?", PHONE_RATE
        )
    )
    async with callee.api:
        result, placed = await asyncio.gather(
            callee.answer_outbound([("q", line)]), telephony.place_call(ours, "+14155550199")
        )
    await wait_closed(store, placed.call_id)
    assert result.call_id == placed.call_id and placed.decision.carrier == Carrier.TELNYX
    record = await store.get(placed.call_id)
    assert record is not None and record.direction == "outbound" and record.state == "completed"
    events = [e.type for e in await store.events(placed.call_id)]
    assert events[0] == CallEventType.OUTBOUND and CallEventType.ANNOUNCEMENT_PLAYED in events
    transcript = await store.transcript(placed.call_id)
    assert any(t.role == "caller" and "saturday" in words(t.text) for t in transcript), transcript
    assert result.turns[0].latency_s is not None
