"""Transfers on a real Redis against the carriers' REST fakes: checked, reserved, asked, settled."""

from __future__ import annotations

import io
import secrets
import time
import wave
from typing import Any

import pytest
from redis.asyncio import Redis

from app.settings import Settings
from calls.records import CallRecord
from calls.store import CallStore, transfer_member
from carriers.base import Carrier, InboundCall, StatusUpdate
from recordings.keyring import KeyRing
from routing.directory import Agent, Directory
from routing.policy import Health, Policy
from store import keys
from telephony.transfer import Transfers
from tenancy.limits import Limits, OutboundLimiter
from tenancy.tenants import TenantStore
from tests.conftest import MASTER_KEY, sealing_calls
from tests.fakes.carrier_apis import fake_carriers
from voice.errors import TransferRefused, TransferUnavailable

SID, TOKEN = "AC" + "c" * 32, "tok"
PUBLIC = "https://voice.example.com"
US_DESK, EU_DESK, PREMIUM = "+14155550123", "+33185001111", "+19005550123"
#: The carrier's id of a call, as each fake's routes accept it.
CARRIER_IDS = {"twilio": "CA" + "1" * 32, "telnyx": "v3:leg-1", "sinch": "sinch-call-1"}
LIMITS = Limits(calls_per_minute=10, concurrent_calls=5, daily_spend_cents=100_000)


class World:
    """Transfers wired to the fakes, with a way to open a live call on a carrier."""

    def __init__(self, redis: Redis, limits: Limits = LIMITS) -> None:
        self.redis = redis
        self.fakes, kits = fake_carriers(SID, TOKEN)
        self.calls: CallStore = sealing_calls(redis)
        self.directory = Directory(redis)
        self.limiter = OutboundLimiter(redis, 10, 3600)
        self.transfers = Transfers(
            calls=self.calls,
            tenants=TenantStore(redis),
            policy=Policy(),
            carriers=kits,
            health=lambda now: Health(),
            limiter=self.limiter,
            default_limits=limits,
            keyring=KeyRing(redis, MASTER_KEY),
            urls=Settings(public_url=PUBLIC),
        )

    async def call(self, carrier: str, desk: str | None, mode: str = "cold") -> tuple[Any, Agent]:
        tenant = "t_" + secrets.token_hex(4)
        agent = await self.directory.add_agent(
            Agent(
                name="desk",
                prompt="p",
                tenant=tenant,
                transfer_number=desk,
                transfer_mode=mode,
                tools=("end_call", "transfer") if desk else ("end_call",),
            )
        )
        number = "+1555555" + str(secrets.randbelow(9000) + 1000)
        route = await self.directory.attach(number, agent)
        inbound = InboundCall(carrier, CARRIER_IDS[carrier], "acct", "+15555550199", number, "x")
        routing = {"carrier": carrier, "region": "international", "country": "US", "reason": "r"}
        call_id, _, _ = await self.calls.open_inbound(inbound, route, time.time(), routing)
        record = await self.calls.get(call_id)
        assert record is not None
        return record, agent

    async def open_transfers(self, tenant: str) -> list[str]:
        return [str(m) for m in await self.redis.zrange(keys.limit_open(tenant), 0, -1)]


async def refused(world: World, record: CallRecord, agent: Agent) -> str:
    with pytest.raises(TransferRefused) as e:
        await world.transfers.admit(record, agent)
    return e.value.code


async def test_an_eu_destination_is_refused_over_twilio_and_telnyx_and_allowed_over_sinch(
    redis: Redis,
) -> None:
    world = World(redis)
    for carrier in ("twilio", "telnyx"):
        record, agent = await world.call(carrier, EU_DESK)
        assert await refused(world, record, agent) == "route_refused"
        assert await world.open_transfers(record.tenant) == []  # nothing reserved
    assert world.fakes[Carrier.TWILIO].transfers == []  # type: ignore[attr-defined]
    assert world.fakes[Carrier.TELNYX].commands == []  # type: ignore[attr-defined]
    record, agent = await world.call("sinch", EU_DESK)
    plan = await world.transfers.admit(record, agent)
    await world.transfers.hand_over(record, plan, None)
    patches = world.fakes[Carrier.SINCH].patches  # type: ignore[attr-defined]
    assert patches == [
        (
            CARRIER_IDS["sinch"],
            {"instructions": [], "action": {"name": "connectPstn", "number": EU_DESK}},
        )
    ]


async def test_a_premium_destination_is_refused_before_the_carrier_is_asked(redis: Redis) -> None:
    world = World(redis)
    record, agent = await world.call("twilio", PREMIUM)
    assert await refused(world, record, agent) == "destination_refused"
    assert world.fakes[Carrier.TWILIO].seen == []


async def test_the_tenants_limits_refuse_a_transfer_and_the_end_of_the_call_settles_it(
    redis: Redis,
) -> None:
    world = World(redis, Limits(calls_per_minute=10, concurrent_calls=1, daily_spend_cents=100_000))
    record, agent = await world.call("twilio", US_DESK)
    plan = await world.transfers.admit(record, agent)
    assert await world.open_transfers(record.tenant) == [transfer_member(record.call_id)]
    await world.transfers.hand_over(record, plan, None)
    # A second transfer of the same tenant while the first one is open: over the limit.
    assert await refused(world, record, agent) == "limit_exceeded"
    # The call ends at the carrier: the transfer leg is charged and leaves the open calls.
    await world.calls.apply_status(
        "twilio", StatusUpdate(CARRIER_IDS["twilio"], "completed", 9, 30), time.time() + 90
    )
    raw = keys.strs(await redis.hgetall(keys.call(record.call_id)))
    assert raw["transfer_cost_cents"] == "20"  # two started minutes at 10 cents
    assert await world.open_transfers(record.tenant) == []
    assert (await world.transfers.admit(record, agent)).number == US_DESK


async def test_a_cold_transfer_sends_each_carriers_documented_request(redis: Redis) -> None:
    world = World(redis)
    for carrier in ("twilio", "telnyx"):
        record, agent = await world.call(carrier, US_DESK)
        plan = await world.transfers.admit(record, agent)
        assert plan.mode == "cold"
        await world.transfers.hand_over(record, plan, None)
    twilio = world.fakes[Carrier.TWILIO].transfers  # type: ignore[attr-defined]
    assert twilio == [(CARRIER_IDS["twilio"], US_DESK, None)]
    telnyx = world.fakes[Carrier.TELNYX].commands  # type: ignore[attr-defined]
    assert [(c[0], c[1], c[2]["to"], "audio_url" in c[2]) for c in telnyx] == [
        (CARRIER_IDS["telnyx"], "transfer", US_DESK, False)
    ]


async def test_a_warm_transfer_serves_the_sealed_summary_under_its_token(redis: Redis) -> None:
    world = World(redis)
    pcm = bytes(range(256)) * 64  # 16-bit mono, 8 kHz
    record, agent = await world.call("twilio", US_DESK, mode="warm")
    plan = await world.transfers.admit(record, agent)
    assert plan.mode == "warm"
    await world.transfers.hand_over(record, plan, pcm)
    [(_, number, url)] = world.fakes[Carrier.TWILIO].transfers  # type: ignore[attr-defined]
    assert number == US_DESK and url is not None and url.startswith(f"{PUBLIC}/webhooks/transfer/")
    token = url.rsplit("/", 1)[1]
    assert len(token) >= 40
    stored = keys.strs(await redis.hgetall(keys.transfer_summary(token)))
    assert 0 < await redis.ttl(keys.transfer_summary(token)) <= 300
    assert b"RIFF" not in stored["audio"].encode()  # sealed, not a WAV in clear
    summary = await world.transfers.summary(token)
    assert summary is not None
    with wave.open(io.BytesIO(summary.wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.readframes(10**6)) == (8000, 1, pcm)
    assert await world.transfers.summary("x" * 43) is None
    # Telnyx plays the same audio from the URL with .wav; Sinch has no whisper: cold.
    record, agent = await world.call("telnyx", US_DESK, mode="warm")
    await world.transfers.hand_over(record, await world.transfers.admit(record, agent), pcm)
    body = world.fakes[Carrier.TELNYX].commands[-1][2]  # type: ignore[attr-defined]
    assert body["audio_url"].startswith(f"{PUBLIC}/webhooks/transfer/")
    assert body["audio_url"].endswith(".wav")
    record, agent = await world.call("sinch", US_DESK, mode="warm")
    assert (await world.transfers.admit(record, agent)).mode == "cold"


async def test_a_carrier_that_fails_gives_the_reservation_back(redis: Redis) -> None:
    world = World(redis)
    record, agent = await world.call("twilio", US_DESK)
    plan = await world.transfers.admit(record, agent)
    await redis.hset(keys.call(record.call_id), "carrier_call_id", "not-a-call-sid")
    gone = await world.calls.get(record.call_id)
    assert gone is not None
    with pytest.raises(TransferRefused) as e:
        await world.transfers.hand_over(gone, plan, None)
    assert e.value.code == "carrier_failed"
    assert await world.open_transfers(record.tenant) == []


async def test_an_agent_without_a_transfer_number_cannot_transfer(redis: Redis) -> None:
    world = World(redis)
    record, agent = await world.call("twilio", None)
    with pytest.raises(TransferUnavailable):
        await world.transfers.admit(record, agent)


async def test_a_state_store_error_at_admission_is_a_refusal_that_holds_nothing(
    redis: Redis,
) -> None:
    world = World(redis)
    record, agent = await world.call("twilio", US_DESK)
    # The call's hash cannot be written (a real Redis error: WRONGTYPE) after the limiter
    # admitted the transfer: the refusal has its code and the limiter's reservation is gone.
    await redis.delete(keys.call(record.call_id))
    await redis.set(keys.call(record.call_id), "not a hash")
    assert await refused(world, record, agent) == "transfer_failed"
    assert await world.open_transfers(record.tenant) == []


async def test_once_the_carrier_took_the_transfer_a_store_error_does_not_undo_it(
    redis: Redis,
) -> None:
    world = World(redis)
    record, agent = await world.call("twilio", US_DESK)
    plan = await world.transfers.admit(record, agent)
    saved = await redis.dump(keys.call(record.call_id))
    await redis.delete(keys.call(record.call_id))
    await redis.set(keys.call(record.call_id), "not a hash")
    await world.transfers.hand_over(record, plan, None)  # logged, not raised
    assert world.fakes[Carrier.TWILIO].transfers == [  # type: ignore[attr-defined]
        (CARRIER_IDS["twilio"], US_DESK, None)
    ]
    # Nothing was given back: the transfer leg stays counted until the call is settled.
    assert await world.open_transfers(record.tenant) == [transfer_member(record.call_id)]
    assert saved is not None
    await redis.restore(keys.call(record.call_id), 0, saved, replace=True)
