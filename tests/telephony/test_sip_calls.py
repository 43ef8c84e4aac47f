"""Answering SIP INVITEs on a real Redis and a real SIP stack: cancelled set-ups, refused offers.

SIPp registers the account (so INVITEs from 127.0.0.1 reach it); the test is the PBX, writing
its requests by hand on a loopback socket (tests/sip_helpers.py SipPeer).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from calls.state import CallState
from calls.store import CallStore
from carriers.sip.stack import AccountConfig, RegState, SipStack, SipTimers
from recordings.keyring import KeyRing
from routing.directory import Agent, Directory
from telephony.admission import Admission
from telephony.sip_calls import SipCalls, SipMediaSettings, carrier_call_id
from tests.conftest import MASTER_KEY
from tests.sip_helpers import (
    REGISTRAR_PASSWORD,
    REGISTRAR_USERNAME,
    SipPeer,
    free_udp_port,
    header,
    registrar,
    sdp,
    status,
    until,
)
from voice.transport import StreamDeps

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) missing")
ACCOUNT = "sip_calls1"


class GatedStore(CallStore):
    """The real call store, holding each INVITE's set-up after its record is opened."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, keyring=KeyRing(redis, MASTER_KEY))
        self.opened = asyncio.Event()
        self.go_on = asyncio.Event()
        self.go_on.set()

    async def open_inbound(self, *args: Any, **kwargs: Any) -> Any:
        got = await super().open_inbound(*args, **kwargs)
        self.opened.set()
        await self.go_on.wait()
        return got


@dataclass
class World:
    stack: SipStack
    calls: SipCalls
    store: GatedStore
    admission: Admission
    tenant: str


@pytest.fixture
async def world(redis: Redis, tmp_path: Path) -> AsyncIterator[World]:
    directory = Directory(redis)
    tenant = "t_sipcalls"
    agent = await directory.add_agent(Agent(name="desk", prompt="p", tenant=tenant))
    store = GatedStore(redis)
    admission = Admission(redis, 10, 10, 3600)

    async def accounts(account_id: str) -> tuple[str, str] | None:
        return (tenant, agent.agent_id) if account_id == ACCOUNT else None

    stack = SipStack("127.0.0.1", 0, tcp=False, timers=SipTimers(timeout=0.5))
    await stack.start()
    # the stream runner is never reached by these calls: none is answered
    stream = StreamDeps(None, directory, admission, lambda _agent: None, None)  # type: ignore[arg-type]
    port = free_udp_port(even=True)
    calls = SipCalls(
        accounts, directory, admission, store, stream,
        SipMediaSettings("127.0.0.1", "127.0.0.1", range(port, port + 2)), None,  # type: ignore[arg-type]
        stack=stack,
    )  # fmt: skip
    stack.on_invite(calls.invite)
    stack.on_bye(calls.caller_bye)
    try:
        async with registrar(tmp_path) as r:
            config = AccountConfig(ACCOUNT, "127.0.0.1", r.port, "udp", REGISTRAR_USERNAME,
                                   REGISTRAR_PASSWORD, None, 60)  # fmt: skip
            stack.register(config)
            await until(lambda: stack.states()[ACCOUNT].state == RegState.REGISTERED)
            yield World(stack, calls, store, admission, tenant)
    finally:
        await calls.stop()
        await stack.stop()


async def record_state(store: CallStore, sip_call_id: str) -> CallState | None:
    call_id = await store.by_carrier_id("sip", carrier_call_id(sip_call_id))
    if call_id is None:
        return None
    record = await store.get(call_id)
    return record.state if record is not None else None


async def test_a_call_cancelled_during_set_up_ends_canceled_and_is_never_answered(
    world: World,
) -> None:
    world.store.go_on.clear()  # the set-up holds once the call is recorded
    peer = SipPeer(world.stack.port)
    try:
        peer.send(peer.invite(ACCOUNT, "setup-cancel-1", sdp(free_udp_port(even=True))))
        assert status(await peer.receive()) == 100
        await world.store.opened.wait()
        assert await record_state(world.store, "setup-cancel-1") == CallState.RINGING
        peer.send(peer.cancel(ACCOUNT, "setup-cancel-1"))
        answers = {}
        for _ in range(2):
            answer = await peer.receive()
            answers[header(answer, "CSeq").split()[1]] = status(answer)
        assert answers == {"CANCEL": 200, "INVITE": 487}
        world.store.go_on.set()

        async def ended() -> bool:
            return await record_state(world.store, "setup-cancel-1") == CallState.CANCELED

        async with asyncio.timeout(10):
            while not await ended():  # noqa: ASYNC110 - the record has no event to wait on
                await asyncio.sleep(0.05)
        # its place is given back, nothing runs, and no 200 ever followed the 487: the next
        # message the PBX gets is the answer to its OPTIONS
        assert world.admission.slots.in_progress(time.time()) == 0
        assert world.calls._live == {}
        peer.send(
            f"OPTIONS sip:{ACCOUNT}@127.0.0.1 SIP/2.0\n{peer.via('opt1')}\n"
            "From: <sip:probe@127.0.0.1>;tag=1\nTo: <sip:probe@127.0.0.1>\n"
            "Call-ID: probe-after-cancel\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n\n"
        )
        after = await peer.receive()
        assert header(after, "CSeq") == "1 OPTIONS" and status(after) == 200, after
        await until(lambda: all(n == 0 for n in world.stack.table_sizes().values()))
    finally:
        peer.close()


@pytest.mark.parametrize(
    ("offer", "why"),
    [
        (lambda port: sdp(port, proto="RTP/SAVP"), "SRTP only"),
        (lambda port: sdp(0), "audio port 0"),
        (lambda port: sdp(port, host="224.0.0.1"), "multicast media"),
        (lambda port: sdp(port, host="169.254.0.7"), "link-local media"),
        (lambda port: sdp(port, host="0.0.0.0"), "unspecified media"),
    ],
)
async def test_offers_we_cannot_play_get_488_and_make_no_call(
    world: World, offer: Any, why: str
) -> None:
    peer = SipPeer(world.stack.port)
    call_id = "offer-" + why.replace(" ", "-")
    try:
        peer.send(peer.invite(ACCOUNT, call_id, offer(free_udp_port(even=True))))
        final = await peer.until_status(200)
        assert status(final) == 488, (why, final)
        assert await record_state(world.store, call_id) is None
        assert world.admission.slots.in_progress(time.time()) == 0
    finally:
        peer.close()


async def test_stop_waits_for_the_handlers_to_store_their_calls_end(world: World) -> None:
    world.store.go_on.clear()  # the set-up holds once the call is recorded
    peer = SipPeer(world.stack.port)
    try:
        peer.send(peer.invite(ACCOUNT, "stop-wait-1", sdp(free_udp_port(even=True))))
        await world.store.opened.wait()
        peer.send(peer.cancel(ACCOUNT, "stop-wait-1"))
        await peer.until_status(400)  # the INVITE's 487
        stopping = asyncio.create_task(world.calls.stop())
        await asyncio.sleep(0)
        world.store.go_on.set()
        await stopping
        # the handler was done (its call stored as over) when stop() returned
        assert await record_state(world.store, "stop-wait-1") == CallState.CANCELED
    finally:
        peer.close()
