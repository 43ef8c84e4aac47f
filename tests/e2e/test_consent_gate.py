"""The consent gate opens when the caller has heard the announcement, over each carrier.

Twilio and Telnyx acknowledge playback (their simulators echo the mark once the audio before
it has played, as the carriers do); Sinch does not, and the platform waits out the audio's
duration from the first chunk sent. The platform sends audio ahead of real time, so the last
chunk leaving comes well before the caller has heard it all.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LiveServer,
    call_store,
    sinch_sim,
    telnyx_sim,
)
from tests.helpers import BAKERY, wait_closed

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("carrier", "number"),
    [("twilio", "+15555550100"), ("telnyx", "+15555550300"), ("sinch", "+33185001234")],
)
async def test_the_gate_opens_once_the_announcement_can_have_been_heard(
    live_server: LiveServer, live_redis: Redis, voice, carrier: str, number: str
) -> None:  # type: ignore[no-untyped-def]
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY, recording=True))
    await d.add_number(number, "bakery")
    store = call_store(live_server, live_redis)
    sim = {
        "twilio": lambda: TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=number),
        "telnyx": lambda: telnyx_sim(live_server, number),
        "sinch": lambda: sinch_sim(live_server, number),
    }[carrier]()
    result = await sim.run([])
    await wait_closed(store, result.call_id)

    events = {e.type: e for e in await store.events(result.call_id)}
    started = events[CallEventType.ANNOUNCEMENT_STARTED].at
    duration = events[CallEventType.ANNOUNCEMENT_STARTED].data["duration_s"]
    played = events[CallEventType.ANNOUNCEMENT_PLAYED].at
    assert duration > 2  # the default announcement, as the platform played it
    # Causal, not a timing budget: audio sent from `started` on cannot have played sooner.
    assert played - started >= duration, (played - started, duration)
    assert events[CallEventType.RECORDING_STARTED].at >= played
