"""A Telnyx call into the running platform survives hostile media messages (``"chunk": 1e999``
and kin): each is dropped and recorded as rejected, and the caller is still heard."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.simulation import trim_silence
from routing import Agent, Directory
from tests.conftest import LiveServer, call_store, telnyx_sim
from tests.helpers import BAKERY, wait_closed, words
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow
NUMBER = "+15555550310"


async def test_a_chunk_of_1e999_is_dropped_and_the_call_goes_on(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY))
    await d.add_number(NUMBER, "bakery")
    store = call_store(live_server, live_redis)
    sim = telnyx_sim(live_server, NUMBER)
    media = (
        '{"event":"media","stream_id":"%s","media":{"track":"inbound","chunk":%s,"payload":"//8="}}'
    )
    bad = tuple(media % (sim.stream_id, chunk) for chunk in ("1e999", "NaN", "[1]"))
    line = trim_silence(synthesize(voice, "Can I order a birthday cake for Friday?", PHONE_RATE))
    result = await asyncio.wait_for(sim.run([("q", line)], inject=bad), 180)
    await wait_closed(store, result.call_id)
    events = await store.events(result.call_id)
    rejected = [e.data["reason"] for e in events if e.type == CallEventType.MEDIA_REJECTED]
    assert len(rejected) == 3 and all("chunk" in r for r in rejected), rejected
    heard = " ".join(t.text for t in await store.transcript(result.call_id) if t.role == "caller")
    assert {"birthday", "cake", "friday"} & words(heard), heard
    assert live_server.proc.poll() is None
