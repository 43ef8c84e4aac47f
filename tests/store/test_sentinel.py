"""Redis Sentinel: a client of store/redis.connect rides out a failover, losing at most ~1 s.

Real processes (tests/sentinel.py): a master with AOF ``everysec`` and ``min-replicas-to-write
1`` / ``min-replicas-max-lag 1``, one replica, three sentinels. The master is killed with
SIGKILL while a writer increments a counter; README "Redis" documents the bound checked here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from store.redis import connect
from store.settings import StoreSettings, parse_sentinels
from tests.sentinel import SentinelCluster

KEY = "sentinel-test:n"


def failovers() -> float:
    return REGISTRY.get_sample_value("bonmoniq_redis_failovers_total") or 0.0


async def test_writes_carry_on_through_a_failover(tmp_path: Path) -> None:
    with SentinelCluster(tmp_path) as cluster:
        client = connect(
            StoreSettings(
                sentinels=cluster.sentinels_setting,
                master_name=cluster.master_name,
                retry_seconds=30,
            )
        )
        seen_before = failovers()
        acked: list[tuple[float, int]] = []  # (when, value) of each acknowledged INCR
        stop, resumed = asyncio.Event(), asyncio.Event()
        promoted_at = float("inf")

        async def writer() -> None:
            while not stop.is_set():
                acked.append((time.monotonic(), int(await client.incr(KEY))))
                await asyncio.sleep(0.002)  # a steady rate, leaving the cores to the rest
                if acked[-1][0] > promoted_at:
                    resumed.set()

        task = asyncio.create_task(writer())
        try:
            await asyncio.sleep(1.5)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill_master)
            await asyncio.to_thread(cluster.wait_promoted)
            promoted_at = time.monotonic()
            await asyncio.wait_for(resumed.wait(), 30)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await task  # the writer never saw an error: every INCR was answered
        try:
            values = [v for _, v in acked]
            # The new master counts on from what the replica had: the first value after the
            # failover is at most one past the last acknowledged write it received.
            drop = next((i for i in range(1, len(values)) if values[i] <= values[i - 1]), None)
            lost = 0 if drop is None else values[drop - 1] - (values[drop] - 1)
            # The bound: the writes acknowledged in the last second before the kill.
            per_second = sum(1 for at, _ in acked if killed_at - 1.0 <= at < killed_at)
            assert per_second > 50, "the writer was too slow to measure anything"
            print(f"failover: {lost} acknowledged writes lost, {per_second} writes/s")
            assert 0 <= lost <= per_second, (lost, per_second)
            assert any(at > promoted_at for at, _ in acked), "no write after the failover"
            assert int(await client.get(KEY) or 0) == values[-1]
            assert failovers() >= seen_before + 1
            # Pub/sub goes through the same client, to the new master.
            async with client.pubsub() as pubsub:
                await pubsub.subscribe("sentinel-test:channel")
                assert await client.publish("sentinel-test:channel", "x") == 1
        finally:
            await client.aclose()


def test_sentinels_setting() -> None:
    assert parse_sentinels("a:26379, 10.0.0.2:26380,[::1]:1") == [
        ("a", 26379),
        ("10.0.0.2", 26380),
        ("::1", 1),
    ]
    for bad in ("a", "a:", ":1", "a:0", "a:x"):
        with pytest.raises(ValueError):
            parse_sentinels(bad)
    assert StoreSettings(sentinels=" ").sentinels is None
    assert not StoreSettings(url=None, sentinels=None).shared
    with pytest.raises(ValueError):
        connect(StoreSettings(url=None, sentinels=None))
