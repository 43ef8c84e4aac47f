"""Calls that outlive ``BONMONIQ_CALL_MAX_SECONDS`` on a running platform (real models, real
Redis): the agent closes politely and hangs up at the carrier with its documented request, the
carrier is given its own hard limit, and the call is charged what it used. Telnyx's Call
Control API and Sinch's callbacks are played on loopback by their simulators."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.base import HANGUP_GRACE_S
from carriers.simulation import RATE
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from store import keys
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
from tests.helpers import FROM, auth, tenant_with_number

MAX_S = 4
CENTS_PER_MINUTE = 7
#: The caller stays on the line, silent, far longer than the call may last.
SILENCE = bytes(2 * RATE * 40)


@pytest.fixture(scope="module")
def short_calls(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The platform with a maximum call length of a few seconds, on a Redis database of its own."""
    server = start_server(
        redis_server.rsplit("/", 1)[0] + "/11",
        tmp_path_factory.mktemp("short-calls"),
        BONMONIQ_CALL_MAX_SECONDS=str(MAX_S),
        BONMONIQ_OUTBOUND_CENTS_PER_MINUTE=str(CENTS_PER_MINUTE),
    )
    yield server
    stop_server(server)


@pytest.fixture
async def short_redis(short_calls: LiveServer) -> AsyncIterator[Redis]:
    async with flushed(short_calls) as client:
        yield client


async def bakery_at(redis: Redis, number: str) -> None:
    """An agent answering ``number``."""
    d = Directory(redis)
    await d.add_agent(Agent(name="bakery", prompt="You sell bread."))
    await d.add_number(number, "bakery")


async def ended_at_maximum_length(redis: Redis, call_id: str) -> None:
    """The platform ended the call for its length (the event says so)."""
    events = await CallStore(redis).events(call_id)
    assert any(
        e.type == CallEventType.HANGUP_REQUESTED and e.data.get("reason") == "maximum length"
        for e in events
    ), events


async def settled(store: CallStore, call_id: str, limit_s: float) -> dict[str, str]:
    """The call's hash once its final status has been applied and it has been charged."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        raw = keys.strs(await store.redis.hgetall(keys.call(call_id)))
        if raw.get("settled_at"):
            return raw
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} was never settled")


async def test_an_outbound_call_ends_at_its_maximum_length_and_pays_what_it_used(
    short_calls: LiveServer, short_redis: Redis
) -> None:
    _, admin = await tenant_with_number(short_calls, short_redis, "A")
    sim = telnyx_sim(short_calls, to="+15555550777")
    store = CallStore(short_redis)
    async with sim.api:
        async with httpx.AsyncClient(base_url=short_calls.url) as c:
            r = await c.post(
                "/v1/calls", json={"from_number": FROM, "to": "+15555550777"}, headers=auth(admin)
            )
            assert r.status_code == 201, r.text
        result = await asyncio.wait_for(
            sim.answer_outbound([("silence", SILENCE)], greeting_timeout=60, reply_timeout=5), 90
        )
    # The platform closed the stream, then hung up through Call Control's documented command.
    assert result.closed_by_platform, short_calls.tail()
    commands = [(action, body) for ccid, action, body in sim.api.log if ccid == sim.ccid]
    assert [a for a, _ in commands][-1] == "hangup", commands
    assert commands[-1][1]["command_id"]
    # The dial carried the carrier's own hard limit.
    dial = next(body for _, action, body in sim.api.log if action == "dial")
    assert dial["time_limit_secs"] == MAX_S + HANGUP_GRACE_S
    events = await store.events(result.call_id)
    ended = [e for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert ended and ended[0].data["reason"] == "maximum length", events
    assert result.agent_audio  # the caller heard the agent (announcement, closing phrase)
    # Telnyx's hang-up event carries no duration: the time since the answer is charged.
    raw = await settled(store, result.call_id, 15)
    talked = float(raw["settled_at"]) - float(raw["answered_at"])
    assert talked > 0  # answered, then ended: the charge is for the time in between
    assert int(raw["cost_cents"]) == CENTS_PER_MINUTE * math.ceil(talked / 60)
    async with httpx.AsyncClient(base_url=short_calls.url) as c:
        usage = (await c.get("/v1/limits", headers=auth(admin))).json()["usage"]
    assert usage["spent_today_cents"] == int(raw["cost_cents"]) and usage["open_calls"] == 0


async def test_an_inbound_call_ends_at_its_maximum_length_too(
    short_calls: LiveServer, short_redis: Redis
) -> None:
    await bakery_at(short_redis, "+15555550300")
    sim = telnyx_sim(short_calls, "+15555550300")
    result = await asyncio.wait_for(
        sim.run([("silence", SILENCE)], greeting_timeout=60, reply_timeout=5), 90
    )
    assert result.closed_by_platform, short_calls.tail()
    assert [a for c, a, _ in sim.api.log if c == sim.ccid][-1] == "hangup"
    await ended_at_maximum_length(short_redis, result.call_id)


async def test_an_inbound_twilio_call_is_ended_by_closing_its_stream(
    short_calls: LiveServer, short_redis: Redis
) -> None:
    # Twilio's hang-up for a <Connect><Stream> call is the platform closing the stream: no TwiML
    # follows </Connect>, so Twilio ends the call.
    await bakery_at(short_redis, "+15555550301")
    sim = TwilioSimulator(short_calls.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550301")
    result = await asyncio.wait_for(
        sim.run([("silence", SILENCE)], greeting_timeout=60, reply_timeout=5), 90
    )
    assert result.closed_by_platform, short_calls.tail()
    await ended_at_maximum_length(short_redis, result.call_id)


async def test_sinch_is_given_the_hard_limit_when_it_answers(
    short_calls: LiveServer, short_redis: Redis
) -> None:
    await bakery_at(short_redis, "+33185001234")
    sim = sinch_sim(short_calls, "+33185001234")
    r = await sim.deliver(sim.ice())
    assert r.status_code == 200, r.text
    assert r.json()["action"]["maxDuration"] == MAX_S + HANGUP_GRACE_S
