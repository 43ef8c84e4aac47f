"""A call's maximum length as each carrier is told it, and settlement charging what a call used
(real Redis, the real admission and settlement scripts; carriers' REST APIs are fakes)."""

from __future__ import annotations

import json
import math
import time

import pytest
from redis.asyncio import Redis

from app.settings import Settings
from calls.records import Reservation
from calls.store import CallStore
from carriers.base import HANGUP_GRACE_S, Carrier, StatusUpdate, carrier_time_limit
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from routing import Agent, Directory
from routing.directory import Route
from routing.policy import Health, Policy
from store import keys
from telephony.service import Telephony
from tenancy.limits import Limits, OutboundLimiter, day
from tests.conftest import sealing_calls
from tests.fakes.carrier_apis import FakeTelnyx, fake_carriers, form
from voice.settings import CallSettings

SID, TOKEN = "AC" + "c" * 32, "tok"
RATE = 3  # cents a minute
MAX_S = 120  # the platform ends calls after two minutes
FROM = "+13125550142"


@pytest.fixture
async def world(redis: Redis):  # type: ignore[no-untyped-def]
    fakes, kits = fake_carriers(SID, TOKEN)
    directory = Directory(redis)
    await directory.add_agent(Agent(name="bakery", prompt="p"))
    limiter = OutboundLimiter(redis, RATE, carrier_time_limit(MAX_S))
    settings = Settings(
        public_url="https://voice.example.com", call=CallSettings(call_max_seconds=MAX_S)
    )
    telephony = Telephony(
        directory,
        sealing_calls(redis),
        Policy.from_dict({}),
        kits,
        lambda now: Health(),
        settings,
        max_call_seconds=settings.call.call_max_seconds,
        limiter=limiter,
    )
    return telephony, fakes, limiter


@pytest.mark.parametrize(
    ("carrier", "number", "to"),
    [
        (Carrier.TWILIO, "+12125550101", "+14155550199"),
        (Carrier.TELNYX, "+13125550142", "+14155550199"),
        (Carrier.SINCH, "+33185001234", "+33612345678"),
    ],
)
async def test_each_carrier_is_given_the_calls_hard_limit(world, carrier, number, to) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, _ = world
    await telephony.directory.add_number(
        number, "bakery", holding={"carrier": str(carrier), "carrier_id": "x"}
    )
    await telephony.place_call(number, to)
    sent = fakes[carrier].seen[-1]
    hard = MAX_S + HANGUP_GRACE_S
    if carrier == Carrier.TWILIO:  # Calls create: TimeLimit
        assert form(sent)["TimeLimit"] == [str(hard)]
    elif carrier == Carrier.TELNYX:  # Dial: time_limit_secs
        assert json.loads(sent.content)["time_limit_secs"] == hard
    else:  # customCallout's ICE answer: connectStream maxDuration
        ice = json.loads(json.loads(sent.content)["customCallout"]["ice"])
        assert ice["action"]["maxDuration"] == hard


async def test_a_limit_beyond_the_carriers_maximum_is_clamped_to_it() -> None:
    fake = FakeTelnyx("K")
    t = TelnyxControl(TelnyxAccount("K", "p", "c"), transport=fake.transport())
    await t.place_call("+13125550142", "+14155550199", "wss://x/media/telnyx", {}, 10**6)
    assert json.loads(fake.seen[-1].content)["time_limit_secs"] == 14400


async def _telnyx_number(redis: Redis) -> Route:
    """The bakery's number ``FROM``, rented through Telnyx."""
    directory = Directory(redis)
    await directory.add_agent(Agent(name="bakery", prompt="p"))
    await directory.add_number(FROM, "bakery", holding={"carrier": "telnyx", "carrier_id": "x"})
    source = await directory.lookup(FROM)
    assert source is not None
    return source


async def _placed(redis: Redis, limiter: OutboundLimiter, tenant: str, now: float) -> str:
    """An admitted, reserved outbound call as ``place_call`` records it; its id."""
    directory = Directory(redis)
    source = await directory.lookup(FROM)
    assert source is not None
    store = sealing_calls(redis)
    call_id = await store.open_outbound(
        source,
        "+14155550199",
        now,
        {"carrier": "telnyx"},
        reservation=Reservation(limiter.reserve_cents(), day(now), RATE),
    )
    refused = await limiter.admit(tenant, call_id, Limits(100, 100, 10_000), now)
    assert refused is None
    await store.attach_carrier_call(call_id, "telnyx", f"v3:{call_id}")
    return call_id


async def test_a_call_longer_than_its_reservation_is_charged_in_full(redis: Redis) -> None:
    source = await _telnyx_number(redis)
    tenant = source.tenant
    limiter = OutboundLimiter(redis, RATE, carrier_time_limit(MAX_S))
    reserve = limiter.reserve_cents()
    assert reserve == RATE * math.ceil(carrier_time_limit(MAX_S) / 60)
    now = time.time()
    store = sealing_calls(redis)
    call_id = await _placed(redis, limiter, tenant, now)
    spend_key = keys.limit_spend(tenant, day(now))
    assert int(await redis.get(spend_key)) == reserve
    # The carrier reports four hours of talk (a call that was never cut).
    await store.apply_status(
        "telnyx", StatusUpdate(f"v3:{call_id}", "completed", duration_s=4 * 3600), now + 4 * 3600
    )
    assert int(await redis.hget(keys.call(call_id), "cost_cents")) == RATE * 240
    assert int(await redis.get(spend_key)) == RATE * 240  # the whole cost, not the reservation
    # The day's cap is now exceeded: the next call is refused on spend.
    refused = await limiter.admit(tenant, "call_next", Limits(100, 100, RATE * 200), now + 1)
    assert refused is not None and refused.limit == "daily_spend"
    # A repeat of the final status charges nothing more.
    assert await store.settle(call_id, now + 5 * 3600, 9 * 3600) is None
    assert int(await redis.get(spend_key)) == RATE * 240


async def test_without_a_carrier_duration_the_time_since_answer_is_charged(redis: Redis) -> None:
    source = await _telnyx_number(redis)
    limiter = OutboundLimiter(redis, RATE, carrier_time_limit(MAX_S))
    now = time.time()
    store = sealing_calls(redis)
    call_id = await _placed(redis, limiter, source.tenant, now)
    # Rings for a minute, is answered, then talks for 10 minutes 5 s; Telnyx's hang-up
    # event carries no duration.
    await store.apply_status("telnyx", StatusUpdate(f"v3:{call_id}", "in-progress"), now + 60)
    ended = now + 60 + 605
    await store.apply_status("telnyx", StatusUpdate(f"v3:{call_id}", "completed"), ended)
    cost = int(await redis.hget(keys.call(call_id), "cost_cents"))
    assert cost == RATE * 11 and cost > limiter.reserve_cents()
    assert int(await redis.get(keys.limit_spend(source.tenant, day(now)))) == cost
    # The call no longer counts as open.
    assert (await limiter.usage(source.tenant, now + 1)).open_calls == 0


async def test_a_short_call_gives_the_rest_of_its_reservation_back(redis: Redis) -> None:
    source = await _telnyx_number(redis)
    limiter = OutboundLimiter(redis, RATE, carrier_time_limit(MAX_S))
    now = time.time()
    call_id = await _placed(redis, limiter, source.tenant, now)
    await CallStore(redis).apply_status(
        "telnyx", StatusUpdate(f"v3:{call_id}", "completed", duration_s=30), now + 40
    )
    assert int(await redis.get(keys.limit_spend(source.tenant, day(now)))) == RATE
