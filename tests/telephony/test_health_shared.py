"""Carrier health shared through Redis: a carrier one process marks down is down for all."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from carriers.base import Carrier
from carriers.registry import load_carriers
from carriers.settings import CarrierSettings
from llm.server import free_port
from routing.subprocessors import Register
from store import keys
from telephony.health import CarrierHealth


async def test_a_mark_reaches_the_other_process(
    redis: Redis, redis_server: str, tmp_path: Path
) -> None:
    carriers = load_carriers(CarrierSettings(), tmp_path)
    register = Register.load()
    other_client = Redis.from_url(redis_server, decode_responses=True)
    one = CarrierHealth(carriers, register, redis)
    other = CarrierHealth(carriers, register, other_client)
    now = time.time()
    try:
        one.mark_down(Carrier.TELNYX, now + 60)
        assert not one.health(now).usable(Carrier.TELNYX, now)  # at once, in this process
        assert other.health(now).usable(Carrier.TELNYX, now)  # not refreshed yet
        assert await one.refresh()
        assert await other.refresh()
        assert not other.health(now).usable(Carrier.TELNYX, now)
        up = REGISTRY.get_sample_value
        assert up("bonmoniq_carrier_up", {"carrier": "telnyx"}) == 0
        assert up("bonmoniq_carrier_up", {"carrier": "twilio"}) == 1
        assert other.health(now + 61).usable(Carrier.TELNYX, now + 61)
        assert other.health(now).usable(Carrier.TWILIO, now)

        # A shorter mark from another process does not shorten the first one.
        other.mark_down(Carrier.TELNYX, now + 10)
        assert await other.refresh()
        assert await one.refresh()
        assert one.down_until[Carrier.TELNYX] == other.down_until[Carrier.TELNYX] == now + 60
        assert float(await redis.hget(keys.carriers_down(), "telnyx") or 0) == now + 60
    finally:
        await other_client.aclose()


async def test_redis_away_keeps_the_last_copy(tmp_path: Path) -> None:
    gone = Redis(port=free_port(), retry=Retry(NoBackoff(), 0), decode_responses=True)
    health = CarrierHealth(load_carriers(CarrierSettings(), tmp_path), Register.load(), gone)
    now = time.time()
    health.mark_down(Carrier.SINCH, now + 30)
    assert not await health.refresh()
    assert not health.health(now).usable(Carrier.SINCH, now)
    assert health.health(now).usable(Carrier.TWILIO, now)
    await gone.aclose()
