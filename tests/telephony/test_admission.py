"""A process's places for calls whose media has not arrived: given back once the call is over
or its media runs on another process, so a full process takes calls again."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from store import keys
from telephony.admission import Admission, Busy


async def test_places_of_calls_over_or_attached_elsewhere_are_given_back(redis: Redis) -> None:
    admission = Admission(redis, max_calls=2, tenant_inbound_calls=10, max_call_seconds=600)
    now = time.time()
    for n, who in enumerate(("twilio:CA1", "twilio:CA2")):
        assert await admission.admit("t1", who, now) is None
        await redis.set(keys.carrier_call(*who.split(":")), f"call-{n}")
        await redis.hset(keys.call(f"call-{n}"), mapping={"state": "ringing"})
    assert admission.at_capacity(now)
    assert await admission.admit("t1", "twilio:CA3", now) == Busy("max_calls")

    # The first caller hung up while it rang; the second call's media runs on another process.
    await redis.hset(keys.call("call-0"), "state", "canceled")
    await redis.hset(keys.call("call-1"), "node", "other-node")
    assert await admission.admit("t1", "twilio:CA3", now) is None
    await admission.settle_pending(now)
    assert admission.slots.in_progress(now) == 1  # CA3 alone, still waiting for its media


async def test_a_call_whose_media_runs_here_keeps_its_place(redis: Redis) -> None:
    admission = Admission(redis, max_calls=1, tenant_inbound_calls=10, max_call_seconds=600)
    now = time.time()
    assert await admission.admit("t1", "twilio:CA9", now) is None
    admission.attach("twilio:CA9")
    await redis.set(keys.carrier_call("twilio", "CA9"), "call-9")
    await redis.hset(keys.call("call-9"), mapping={"state": "in-progress", "node": "me"})
    await admission.settle_pending(now)
    assert admission.at_capacity(now)
    assert await admission.admit("t1", "twilio:CA10", now) == Busy("max_calls")
