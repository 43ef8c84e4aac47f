"""The call store on a real Redis: one effect per delivery, states only move forward."""

from __future__ import annotations

import asyncio

from calls.events import CallEventType
from calls.state import CallState
from calls.store import CallStore, Turn
from carriers.base import InboundCall, StatusUpdate
from recordings.crypto import new_key
from recordings.keyring import KeyRing
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage
from routing import Agent, Route
from store import keys
from tests.conftest import sealing_calls, write_transcript

INBOUND = InboundCall("twilio", "CA" + "1" * 32, "AC1", "+15555550123", "+15555550100", "ringing")
ROUTE = Route("+15555550100", "default", Agent(name="bakery", prompt="p"))


async def test_concurrent_duplicate_deliveries_create_one_call(redis) -> None:  # type: ignore[no-untyped-def]
    store = sealing_calls(redis)
    results = await asyncio.gather(*(store.open_inbound(INBOUND, ROUTE, 100.0) for _ in range(8)))
    ids = {call_id for call_id, _, _ in results}
    assert len(ids) == 1 and sum(created for _, created, _ in results) == 1
    assert {state for _, _, state in results} == {"ringing"}  # the repeats read the first one
    call_id = ids.pop()
    assert await redis.zcard("calls") == 1
    assert [e.type for e in await store.events(call_id)] == [CallEventType.INBOUND]
    record = await store.get(call_id)
    assert record is not None and (record.state, record.agent_name, record.tenant) == (
        "ringing",
        "bakery",
        "default",
    )
    assert record.agent == ROUTE.agent.agent_id
    assert await store.by_carrier_id("twilio", INBOUND.carrier_call_id) == call_id


async def test_status_callbacks_apply_once_and_never_go_back(redis) -> None:  # type: ignore[no-untyped-def]
    store = sealing_calls(redis)
    call_id, _, _ = await store.open_inbound(INBOUND, ROUTE, 100.0)
    sid = INBOUND.carrier_call_id
    assert (
        await store.apply_status("twilio", StatusUpdate(sid, "completed", 3, 42), 103.0) == call_id
    )
    assert (
        await store.apply_status("twilio", StatusUpdate(sid, "completed", 3, 42), 104.0) is None
    )  # retry
    assert (
        await store.apply_status("twilio", StatusUpdate(sid, "in-progress", 2), 105.0) == call_id
    )  # late
    record = await store.get(call_id)
    assert record is not None and record.state == "completed"
    statuses = [
        (e.data["status"], e.data["applied"])
        for e in await store.events(call_id)
        if e.type == CallEventType.STATUS
    ]
    assert statuses == [("completed", True), ("in-progress", False)]
    ended = [e for e in await store.events(call_id) if e.type == CallEventType.ENDED]
    assert len(ended) == 1
    assert (
        await store.apply_status("twilio", StatusUpdate("CA" + "2" * 32, "completed"), 1.0) is None
    )


async def test_rejected_call_and_transcript(redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = sealing_calls(redis)
    call_id, created, state = await store.open_inbound(INBOUND, None, 100.0)
    assert created and state == "rejected"
    record = await store.get(call_id)
    assert record is not None and record.state == "rejected" and record.agent == ""
    # a rejected call stays over
    assert not await store.advance(call_id, CallState.IN_PROGRESS, 101.0)
    await store.add_turn(call_id, Turn("caller", "hello", 102.0))
    await store.add_turn(call_id, Turn("agent", "hi there", 103.0))
    events = await store.events(call_id)
    assert [e.type for e in events][-2:] == [CallEventType.CALLER_TURN, CallEventType.AGENT_TURN]
    # Events carry a turn's length, never its words: those are only in the encrypted transcript.
    assert [e.data for e in events][-2:] == [{"chars": 5}, {"chars": 8}]
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), LocalStorage(tmp_path))
    await write_transcript(
        objects, "t1", call_id, [("caller", "hello", 102.0), ("agent", "hi there", 103.0)]
    )
    reader = CallStore(redis, objects)
    assert [t.text for t in await reader.transcript(call_id)] == ["hello", "hi there"]
    assert b"hello" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


async def test_the_call_s_language_is_noted_only_on_a_record_that_exists(redis) -> None:  # type: ignore[no-untyped-def]
    store = sealing_calls(redis)
    call_id, _, _ = await store.open_inbound(INBOUND, ROUTE, 100.0)
    await store.set_language(call_id, "fr")
    record = await store.get(call_id)
    assert record is not None and record.language == "fr"
    await store.set_language("call_gone", "fr")  # deleted meanwhile (retention, offboarding)
    assert not await redis.exists(keys.call("call_gone"))
