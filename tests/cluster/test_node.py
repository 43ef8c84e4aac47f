"""Node liveness on a real Redis: a lost process's calls are ended by a survivor, once."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.records import Reservation, member
from calls.state import CallState
from calls.store import CallStore
from carriers.base import InboundCall
from carriers.twilio.control import TwilioAccount, TwilioControl
from cluster.node import Node
from cluster.reaper import NODE_LOST, Reaper
from recordings.crypto import Identity
from recordings.keyring import KeyRing
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage
from routing.directory import Agent, Directory, Route
from store import keys
from telephony.admission import Admission
from tenancy.limits import Limits, OutboundLimiter, day
from tests.conftest import ACCOUNT_SID as SID
from tests.conftest import AUTH_TOKEN as TOKEN
from tests.conftest import MASTER_KEY
from tests.fakes.carrier_apis import FakeTwilio, form

TENANT = "tenant_nodes"
ROUTING = {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"}
HEARTBEAT_S, LEASE_S = 0.1, 0.5
RATE = 3  # cents a minute


@pytest.fixture
def objects(redis: Redis, tmp_path: Path) -> EncryptedObjects:
    return EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path / "objects"))


async def agent_route(redis: Redis, number: str) -> Route:
    d = Directory(redis)
    agent = await d.add_agent(Agent(name="desk", prompt="p", tenant=TENANT, recording=True))
    return await d.attach(number, agent)


async def inbound_call(calls: CallStore, route: Route, admission: Admission, now: float) -> str:
    """An answered inbound call holding its place in the tenant's inbound count."""
    sid = "CA" + secrets.token_hex(16)
    inbound = InboundCall("twilio", sid, "AC1", "+15555550711", route.number, "ringing")
    assert await admission.admit(TENANT, member("twilio", sid), now) is None
    call_id, _, _ = await calls.open_inbound(inbound, route, now, ROUTING)
    assert await calls.advance(call_id, CallState.IN_PROGRESS, now)
    return call_id


async def outbound_call(
    calls: CallStore, limiter: OutboundLimiter, route: Route, now: float
) -> str:
    """An outbound call answered at ``now``, its reservation held against the daily cap."""
    call_id = "call_" + secrets.token_hex(12)
    assert await limiter.admit(TENANT, call_id, Limits(10, 10, 100000), now, RATE) is None
    reservation = Reservation(limiter.reserve_cents(RATE), day(now), RATE)
    await calls.open_outbound(
        route, "+15555550712", now, ROUTING, call_id=call_id, reservation=reservation
    )
    assert await calls.advance(call_id, CallState.IN_PROGRESS, now)
    return call_id


@contextlib.asynccontextmanager
async def beating(node: Node) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(node.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_lost(reaper: Reaper, node_id: str) -> None:
    for _ in range(100):
        if node_id in await reaper.lost(time.time()):
            return
        await asyncio.sleep(HEARTBEAT_S)
    raise AssertionError(f"{node_id} never counted as lost")


async def test_a_survivor_ends_a_killed_process_calls_once(
    redis: Redis, objects: EncryptedObjects
) -> None:
    calls = CallStore(redis, objects)
    route = await agent_route(redis, "+15555550701")
    admission = Admission(redis, 10, 10, 600)
    limiter = OutboundLimiter(redis, RATE, 600)
    now = time.time()
    inbound = await inbound_call(calls, route, admission, now)
    outbound = await outbound_call(calls, limiter, route, now - 30)
    kept = await inbound_call(calls, route, admission, now)
    # The inbound call's recording was being written when its process died.
    writer = await objects.create(Identity(TENANT, inbound, "recording"), format="pcm")
    await writer.append(b"\x01\x02" * 800)
    assert (await limiter.usage(TENANT, now)).open_calls == 1
    reserved = (await limiter.usage(TENANT, now)).spent_today_cents
    assert reserved == limiter.reserve_cents(RATE)

    dying = Node(redis, "node-dying", HEARTBEAT_S, LEASE_S, calls)
    alive = Node(redis, "node-alive", HEARTBEAT_S, LEASE_S, calls)
    assert await alive.beat(time.time()) and await dying.beat(time.time())
    async with beating(alive):
        async with beating(dying):
            await dying.carry(inbound)
            await dying.carry(outbound)
            await alive.carry(kept)
            assert await calls.holder(inbound) == "node-dying"
            assert await calls.holder(kept) == "node-alive"
        # Cancelled without a clean stop, as a kill would leave it: its lease lapses.
        # The survivors tell the carrier (Twilio's REST API, played by its fake) to hang up.
        twilio = FakeTwilio(SID, TOKEN)
        control = TwilioControl(TwilioAccount(SID, TOKEN), transport=twilio.transport())

        async def hang_up(carrier: str, carrier_call_id: str) -> None:
            assert carrier == "twilio"
            await control.hang_up(carrier_call_id)

        survivors = [
            Reaper(redis, "node-alive", calls, objects, LEASE_S, hang_up),
            Reaper(redis, "node-other", calls, objects, LEASE_S, hang_up),
        ]
        await until_lost(survivors[0], "node-dying")
        # A process never counts itself lost, even long after its last heartbeat.
        assert "node-alive" not in await survivors[0].lost(time.time() + 3600)
        assert "node-dying" not in await Reaper(redis, "node-dying", calls, objects, 1).lost(
            time.time() + 3600
        )
        ended = await asyncio.gather(*(r.reap(time.time()) for r in survivors))
        assert sum(ended) == 2  # two reapers at once: each call ended once
        assert sum(await asyncio.gather(*(r.reap(time.time()) for r in survivors))) == 0
        lost_record = await calls.get(inbound)
        assert lost_record is not None
        hung_up = [
            form(r)["Status"] for r in twilio.seen if lost_record.carrier_call_id in str(r.url)
        ]
        assert hung_up == [["completed"]]  # once, by the reaper that ended it

        for call_id in (inbound, outbound):
            record = await calls.get(call_id)
            assert record is not None and record.state == CallState.FAILED
            lost = [e for e in await calls.events(call_id) if e.type == CallEventType.NODE_LOST]
            assert len(lost) == 1 and lost[0].data == {"node": "node-dying"}
            assert await calls.holder(call_id) is None
        # The outbound reservation is settled: a minute charged, the open call released.
        usage = await limiter.usage(TENANT, time.time())
        assert usage.open_calls == 0 and usage.spent_today_cents == RATE
        # The inbound call's place is given back; the live one keeps its own.
        live = await calls.get(kept)
        assert live is not None
        places = set(await redis.zrange(keys.limit_inbound(TENANT), 0, -1))
        assert places == {member("twilio", live.carrier_call_id)}
        # Its recording opens as truncated, with the reason, not as corrupt.
        [info] = await objects.of_call(inbound, "recording")
        opened = await objects.open(info)
        assert not opened.complete and opened.reason == NODE_LOST
        assert opened.plaintext == b"\x01\x02" * 800
        # The live process's call is untouched.
        record = await calls.get(kept)
        assert record is not None and record.state == CallState.IN_PROGRESS
        assert all(e.type != CallEventType.NODE_LOST for e in await calls.events(kept))
        assert await calls.holder(kept) == "node-alive"
        # The lost process is forgotten; the survivor is still listed.
        assert await redis.zscore(keys.nodes(), "node-dying") is None
        assert not await redis.exists(keys.node_calls("node-dying"))
        assert await redis.zscore(keys.nodes(), "node-alive") is not None
    reaped = REGISTRY.get_sample_value("bonmoniq_node_calls_reaped_total")
    assert reaped is not None and reaped >= 2


async def test_only_an_object_being_written_is_marked_truncated(
    redis: Redis, objects: EncryptedObjects
) -> None:
    identity = Identity(TENANT, "call_" + secrets.token_hex(12), "transcript")
    done = await objects.create(identity)
    await done.append(b"turn")
    await done.finalize()
    assert not await objects.mark_truncated(done.info.object_id, NODE_LOST)
    info = await objects.info(done.info.object_id)
    assert info is not None and info.state == "final"
    opened = await objects.open(info)
    assert opened.complete and opened.plaintext == b"turn"


async def test_a_clean_stop_leaves_no_keys_and_a_lapsed_lease_registers_again(
    redis: Redis, objects: EncryptedObjects
) -> None:
    calls = CallStore(redis, objects)
    node = Node(redis, "node-a", HEARTBEAT_S, LEASE_S, calls)
    assert await node.beat(time.time())
    await node.carry("call_x")
    # Reaped while partitioned away: its lease and its list are gone.
    await redis.delete(keys.node("node-a"), keys.node_calls("node-a"))
    assert await node.beat(time.time())
    assert await redis.exists(keys.node("node-a"))
    assert await redis.smembers(keys.node_calls("node-a")) == {"call_x"}
    await node.drop("call_x")
    await node.stop(time.time())
    assert not await redis.exists(keys.node("node-a"), keys.node_calls("node-a"))
    assert await redis.zscore(keys.nodes(), "node-a") is None


async def test_a_stop_with_calls_left_hands_them_to_the_survivors(
    redis: Redis, objects: EncryptedObjects
) -> None:
    calls = CallStore(redis, objects)
    route = await agent_route(redis, "+15555550703")
    call_id = await inbound_call(calls, route, Admission(redis, 10, 10, 600), time.time())
    node = Node(redis, "node-b", HEARTBEAT_S, LEASE_S, calls)
    assert await node.beat(time.time())
    await node.carry(call_id)
    await node.stop(time.time())  # the drain ran out of time: the call is cut
    reaper = Reaper(redis, "node-c", calls, objects, LEASE_S)
    assert await reaper.reap(time.time()) == 1
    record = await calls.get(call_id)
    assert record is not None and record.state == CallState.FAILED


async def test_a_failing_state_store_is_logged_and_the_heartbeat_goes_on(
    redis: Redis, objects: EncryptedObjects
) -> None:
    from llm.server import free_port

    gone = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    before = REGISTRY.get_sample_value("bonmoniq_node_heartbeats_total", {"result": "failed"})
    node = Node(gone, "node-d", HEARTBEAT_S, LEASE_S, CallStore(gone, objects))
    async with beating(node) as task:
        for _ in range(50):
            now = REGISTRY.get_sample_value("bonmoniq_node_heartbeats_total", {"result": "failed"})
            if (now or 0) >= (before or 0) + 2:
                break
            await asyncio.sleep(HEARTBEAT_S)
        assert not task.done()  # two failed beats and the loop still runs
    await node.carry("call_y")  # logged, not raised
    await node.stop(time.time())
    await gone.aclose()


async def test_a_restarted_process_of_the_same_name_hands_its_predecessors_calls_over(
    redis: Redis, objects: EncryptedObjects
) -> None:
    calls = CallStore(redis, objects)
    route = await agent_route(redis, "+15555550704")
    call_id = await inbound_call(calls, route, Admission(redis, 10, 10, 600), time.time())
    first = Node(redis, "pod-0", HEARTBEAT_S, LEASE_S, calls)
    assert await first.beat(time.time())
    await first.carry(call_id)
    # Killed, and started again under the same name before its lease lapsed.
    again = Node(redis, "pod-0", HEARTBEAT_S, LEASE_S, calls)
    assert await again.beat(time.time())
    assert not await redis.exists(keys.node_calls("pod-0"))
    # Its own reaper ends the predecessor's call (under another name: never itself).
    assert await Reaper(redis, "pod-0", calls, objects, LEASE_S).reap(time.time()) == 1
    record = await calls.get(call_id)
    assert record is not None and record.state == CallState.FAILED
