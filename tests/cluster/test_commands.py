"""Live-call commands between two processes' buses on one real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from calls.state import CallState
from calls.store import CallStore
from carriers.base import InboundCall
from cluster.commands import (
    Action,
    CallNotLive,
    CommandBus,
    CommandTimeout,
    TransferDenied,
    TransferUnavailable,
)
from cluster.live import LiveCalls
from cluster.node import Node
from routing.directory import Agent, Directory
from store import keys
from tests.conftest import LiveServer, sealing_calls
from voice.errors import TransferRefused
from voice.errors import TransferUnavailable as NoTransferNumber

ROUTING = {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"}


@dataclass
class Session:
    """A running call as the registry sees it (voice.transport.LiveCall)."""

    recording: bool = True
    asked: list[str] = field(default_factory=list)
    #: What a transfer does: its result, or the session's error.
    transfers: list[str | Exception] = field(default_factory=list)
    media_over: bool = False

    async def hang_up(self, by: str) -> None:
        self.asked.append(f"hang_up:{by}")

    async def stop_recording(self, how: str) -> bool:
        self.asked.append(f"stop_recording:{how}")
        was, self.recording = self.recording, False
        return was

    async def transfer(self, by: str) -> str:
        self.asked.append(f"transfer:{by}")
        outcome = self.transfers.pop(0) if self.transfers else NoTransferNumber("no number")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@dataclass
class Process:
    node: Node
    live: LiveCalls
    bus: CommandBus


@contextlib.asynccontextmanager
async def process(
    redis: Redis, calls: CallStore, node_id: str, timeout_s: float = 5.0
) -> AsyncIterator[Process]:
    """One process's node, registry and bus, its heartbeat and listener running."""
    node = Node(redis, node_id, 0.2, 2.0, calls)
    live = LiveCalls(node)
    bus = CommandBus(redis, node_id, live, calls, timeout_s)
    await node.beat(time.time())
    tasks = [asyncio.create_task(node.run()), asyncio.create_task(bus.listen())]
    await asyncio.wait_for(bus.listening.wait(), 5)
    try:
        yield Process(node, live, bus)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await node.stop(time.time())


async def live_call(redis: Redis, calls: CallStore) -> str:
    d = Directory(redis)
    agent = await d.add_agent(Agent(name="desk", prompt="p", tenant="tenant_cmd"))
    route = await d.attach("+15555550721", agent)
    inbound = InboundCall(
        "twilio", "CA" + secrets.token_hex(16), "AC1", "+15555550722", route.number, "ringing"
    )
    call_id, _, _ = await calls.open_inbound(inbound, route, time.time(), ROUTING)
    await calls.advance(call_id, CallState.IN_PROGRESS, time.time())
    return call_id


def counted(action: str, result: str) -> float:
    labels = {"action": action, "result": result}
    return REGISTRY.get_sample_value("bonmoniq_cluster_commands_total", labels) or 0.0


async def test_a_command_reaches_the_process_holding_the_call_and_is_answered(
    redis: Redis,
) -> None:
    calls = sealing_calls(redis)
    call_id = await live_call(redis, calls)
    session = Session()
    hung_up = counted("hangup", "hung_up")
    async with process(redis, calls, "node-a") as a, process(redis, calls, "node-b") as b:
        await b.live.attach(call_id, session)
        assert await calls.holder(call_id) == "node-b"
        assert await a.bus.send(call_id, Action.HANGUP) == "hung_up"
        assert await a.bus.send(call_id, Action.STOP_RECORDING) == "recording_stopped"
        assert await a.bus.send(call_id, Action.STOP_RECORDING) == "not_recording"
        # On the holding process itself: run at once, no round trip.
        assert await b.bus.send(call_id, Action.HANGUP) == "hung_up"
        assert session.asked == [
            "hang_up:api",
            "stop_recording:api",
            "stop_recording:api",
            "hang_up:api",
        ]
        # A transfer's outcome crosses processes with its code.
        session.transfers = [
            NoTransferNumber("the agent has no transfer number"),
            TransferRefused("route_refused", "an EU number on a US carrier"),
            TransferRefused("transfer_failed", "the transfer could not be checked"),
            "transferring",
        ]
        with pytest.raises(TransferUnavailable):
            await a.bus.send(call_id, Action.TRANSFER)
        with pytest.raises(TransferDenied) as refused:
            await a.bus.send(call_id, Action.TRANSFER)
        assert refused.value.code == "route_refused"
        with pytest.raises(TransferDenied) as refused:
            await a.bus.send(call_id, Action.TRANSFER)
        assert refused.value.code == "transfer_failed"
        # Admitted: the answer comes at once, the hand-over goes on in the call.
        assert await a.bus.send(call_id, Action.TRANSFER) == "transferring"
        assert session.asked[-4:] == ["transfer:api"] * 4
        # Its media over (the session finishing its bookkeeping): no command applies.
        session.media_over = True
        with pytest.raises(CallNotLive):
            await a.bus.send(call_id, Action.HANGUP)
        assert session.asked[-1] == "transfer:api"
        # The session ended: the call is no longer live anywhere.
        await b.live.detach(call_id)
        assert await calls.holder(call_id) is None
        with pytest.raises(CallNotLive):
            await a.bus.send(call_id, Action.HANGUP)
    assert counted("hangup", "hung_up") == hung_up + 2


async def test_not_live_and_timeout_answers(redis: Redis) -> None:
    calls = sealing_calls(redis)
    call_id = await live_call(redis, calls)
    async with process(redis, calls, "node-a", timeout_s=0.5) as a:
        # Named holder, but that process does not run the call (its session has gone).
        async with process(redis, calls, "node-b"):
            await calls.hold(call_id, "node-b")
            with pytest.raises(CallNotLive):
                await a.bus.send(call_id, Action.HANGUP)
        # A holder that is gone (no lease, nobody listening).
        await calls.hold(call_id, "node-gone")
        with pytest.raises(CallNotLive):
            await a.bus.send(call_id, Action.HANGUP)
        # A holder that lives and hears the command, but never answers.
        await calls.hold(call_id, "node-stuck")
        await redis.set(keys.node("node-stuck"), "1", px=10_000)
        pubsub = redis.pubsub()
        await pubsub.subscribe(keys.node_commands("node-stuck"))
        try:
            timeouts = counted("hangup", "command_timeout")
            with pytest.raises(CommandTimeout):
                await a.bus.send(call_id, Action.HANGUP)
            assert counted("hangup", "command_timeout") == timeouts + 1
        finally:
            await pubsub.aclose()
        # A call that is over is not live, whoever held it.
        await calls.advance(call_id, CallState.COMPLETED, time.time())
        with pytest.raises(CallNotLive):
            await a.bus.send(call_id, Action.HANGUP)


async def test_the_listener_subscribes_again_after_losing_its_connection(redis: Redis) -> None:
    calls = sealing_calls(redis)
    call_id = await live_call(redis, calls)
    async with process(redis, calls, "node-a", 1.0) as a, process(redis, calls, "node-b") as b:
        await b.live.attach(call_id, Session())
        await redis.client_kill_filter(_type="pubsub")  # every subscription of the server
        for _ in range(100):
            with contextlib.suppress(CommandTimeout):
                if await a.bus.send(call_id, Action.HANGUP) == "hung_up":
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the listener never subscribed again")


@pytest.mark.slow
async def test_hang_up_and_stop_recording_through_the_api_during_a_call(
    live_server: LiveServer, live_redis: Redis
) -> None:
    from calls.events import CallEventType
    from carriers.twilio.simulator import TwilioSimulator
    from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, call_store
    from tests.helpers import auth, new_tenant

    number = "+15555550731"
    tenant_id, admin = await new_tenant(live_server, "live")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        made = await c.post(
            "/v1/agents",
            json={"name": "desk", "system_prompt": "p", "recording": True},
            headers=auth(admin),
        )
        assert made.status_code == 201, made.text
    d = Directory(live_redis)
    await d.attach(number, await d.get_agent_by_id(made.json()["agent_id"], tenant_id))
    store = call_store(live_server, live_redis)
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=number)
    # The caller stays on the line, silent, until the platform hangs up.
    call = asyncio.create_task(sim.run([("silence", bytes(8000 * 2 * 60))]))
    call_id = ""
    for _ in range(600):
        call_id = await store.by_carrier_id("twilio", sim.call_sid) or ""
        kinds = [e.type for e in await store.events(call_id)] if call_id else []
        if CallEventType.RECORDING_STARTED in kinds:
            break
        assert not call.done(), call
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the recording never started: " + live_server.tail())
    async with httpx.AsyncClient(base_url=live_server.url, timeout=15) as c:
        stop = await c.post(f"/v1/calls/{call_id}/stop-recording", headers=auth(admin))
        assert stop.json() == {
            "call_id": call_id,
            "action": "stop_recording",
            "result": "recording_stopped",
        }, stop.text
        hang = await c.post(f"/v1/calls/{call_id}/hangup", headers=auth(admin))
        assert hang.status_code == 200 and hang.json()["result"] == "hung_up", hang.text
        result = await asyncio.wait_for(call, 60)
        assert result.closed_by_platform
        # The caller's side closes as the platform hangs up; the session lets go of the call
        # just after: from then on no process holds it.
        for _ in range(100):
            again = await c.post(f"/v1/calls/{call_id}/hangup", headers=auth(admin))
            if again.status_code != 200:
                break
            await asyncio.sleep(0.1)
        assert again.status_code == 409 and again.json()["code"] == "call_not_live", again.text
        audit = (await c.get("/v1/audit", headers=auth(admin))).json()["items"]
        actions = [e["action"] for e in audit if e["target"] == call_id]
        assert {"call.stop_recording", "call.hangup", "recording.objected"} <= set(actions)
    assert (await sim.status("completed", 2)).status_code == 204
    record = await store.get(call_id)
    assert record is not None and record.state == CallState.COMPLETED
    events = await store.events(call_id)
    assert [e.data.get("how") for e in events if e.type == CallEventType.RECORDING_OBJECTED] == [
        "api"
    ]
    hangups = [e.data for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert hangups and hangups[0]["by"] == "api"
    assert await store.holder(call_id) is None
    # What was captured is gone.
    assert await store.objects.of_call(call_id, "recording") == []  # type: ignore[union-attr]
