"""Telnyx's transfer in its documented shapes: the leg to the person, bridged or failed.

Per Telnyx's Transfer page, a transfer that fails sends only the new leg's ``call.hangup``
and keeps the original call up. The platform sends its ``client_state`` with
``actions/transfer`` and, on that leg's hang-up with no ``call.bridged`` before, hangs up the
original call through Call Control (the Telnyx simulator's REST fake records it) and records a
``transfer_failed`` event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time

from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.base import InboundCall
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from routing import Agent, Directory
from tests.conftest import TELNYX_API_KEY, LiveServer, sealing_calls, telnyx_sim

ROUTING = {"carrier": "telnyx", "region": "international", "country": "US", "reason": "r"}
DESK = "+14155550123"


async def a_telnyx_call(redis: Redis, name: str, number: str) -> tuple[str, str]:
    """A call answered over Telnyx: our call id and its call_control_id."""
    d = Directory(redis)
    agent = await d.add_agent(
        Agent(name=name, prompt="p", transfer_number=DESK, tools=("end_call", "transfer"))
    )
    route = await d.attach(number, agent)
    ccid = "v3:" + secrets.token_urlsafe(24)
    inbound = InboundCall("telnyx", ccid, "e2e-connection", "+15555550190", number, "x")
    call_id, _, _ = await sealing_calls(redis).open_inbound(inbound, route, time.time(), ROUTING)
    return call_id, ccid


async def test_a_failed_transfer_leg_hangs_up_the_original_call_and_a_bridged_one_does_not(
    live_server: LiveServer, live_redis: Redis
) -> None:
    failed_id, failed = await a_telnyx_call(live_redis, "tx-failed", "+15555550771")
    bridged_id, bridged = await a_telnyx_call(live_redis, "tx-bridged", "+15555550772")
    sim = telnyx_sim(live_server, "+15555550771")
    base = f"http://127.0.0.1:{live_server.telnyx_api_port}/v2"
    control = TelnyxControl(TelnyxAccount(TELNYX_API_KEY, "", "e2e-connection", base))
    async with sim.api:
        for ccid, call_id in ((failed, failed_id), (bridged, bridged_id)):
            await control.transfer(ccid, DESK, call_ref=call_id)
        sent = {c: body for c, a, body in sim.api.log if a == "transfer"}
        state = json.loads(base64.b64decode(sent[failed]["client_state"]))
        assert state == {"call_id": failed_id, "transfer_of": failed}
        assert sent[failed]["time_limit_secs"] == 14400

        await sim.transfer_leg(sent[bridged], answered=True)
        await sim.transfer_leg(sent[failed], answered=False)
        # The failed leg's hang-up: the original call is hung up, the bridged one is not.
        async with asyncio.timeout(15):
            while (got := await sim.api.commands.get())[1] != "hangup":
                pass
        assert got[0] == failed
        assert [(c, a) for c, a, _ in sim.api.log if a == "hangup"] == [(failed, "hangup")]
    calls = sealing_calls(live_redis)
    events = {i: await calls.events(i) for i in (failed_id, bridged_id)}
    assert [e.data for e in events[failed_id] if e.type == CallEventType.TRANSFER_FAILED] == [
        {"cause": "timeout", "by": "carrier"}
    ]
    assert CallEventType.TRANSFER_FAILED not in [e.type for e in events[bridged_id]]
