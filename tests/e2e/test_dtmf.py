"""End to end: keys the caller presses reach the model as their words, on all three carriers.

Each carrier's simulator sends the keys in that carrier's form (Twilio's and Telnyx's media
``dtmf`` messages, Sinch's ``dtmf`` command on the stream); the scripted LLM records what the
model was asked. A ``0`` pressed first afterwards asks for a person: the call is transferred.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from routing.directory import DigitCollection
from tests import privacy
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store, sinch_sim, telnyx_sim
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import wait_closed

pytestmark = pytest.mark.slow

#: A 9 inside the sequence: a digit, not the objection to the recording.
KEYS = "290457183"
US_DESK, EU_DESK = "+14155550123", "+33185001111"


def simulator(server: LiveServer, carrier: str, number: str) -> Any:
    if carrier == "twilio":
        return TwilioSimulator(
            server.url, ACCOUNT_SID, AUTH_TOKEN, to=number, api_port=server.twilio_api_port
        )
    return (telnyx_sim if carrier == "telnyx" else sinch_sim)(server, number)


@pytest.mark.parametrize(
    ("carrier", "number", "desk"),
    [
        ("twilio", "+15555550721", US_DESK),
        ("telnyx", "+15555550722", US_DESK),
        ("sinch", "+33185001299", EU_DESK),
    ],
)
async def test_keys_reach_the_model_as_the_callers_words(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    carrier: str,
    number: str,
    desk: str,
) -> None:
    d = Directory(scripted_redis)
    await d.add_agent(
        Agent(
            name="orders",
            prompt="You take order numbers.",
            recording=True,
            transfer_number=desk,
            dtmf=DigitCollection(max_digits=12, terminator="#", timeout_s=5.0),
        )
    )
    await d.add_number(number, "orders")
    privacy.SEEN.words.add(KEYS)
    scripted_llm.script(lambda body: Reply.say("Thank you, I have your order number."))
    store = call_store(scripted_server, scripted_redis)

    # The sequence, ended by its terminator; then 0 as a first key: a person, please.
    result = await simulator(scripted_server, carrier, number).run([], dtmf=KEYS + "#0")
    await wait_closed(store, result.call_id)

    asked = [r["messages"][-1] for r in scripted_llm.chat_requests()]
    assert {"role": "user", "content": f"(keypad) {KEYS}"} in asked, asked
    transcript = await store.transcript(result.call_id)
    assert [t.text for t in transcript if t.role == "caller"] == [f"(keypad) {KEYS}"]
    events = await store.events(result.call_id)
    assert [e.data for e in events if e.type == CallEventType.DIGITS] == [{"count": len(KEYS)}]
    assert CallEventType.RECORDING_OBJECTED not in {e.type for e in events}
    assert [e.data["by"] for e in events if e.type == CallEventType.TRANSFER_REQUESTED] == ["dtmf"]
    assert [e.data["by"] for e in events if e.type == CallEventType.TRANSFERRED] == ["dtmf"]
