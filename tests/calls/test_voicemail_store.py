"""An outbound call's voicemail choice on a real Redis: the message sealed, results merged."""

from __future__ import annotations

import redis as sync_redis
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.records import VoicemailRequest
from calls.state import CallState
from carriers.base import AnsweredBy, MachineDetection
from recordings.keyring import KeyRing
from recordings.subjects import UNREADABLE
from routing import Agent, Route
from tests.conftest import MASTER_KEY, sealing_calls
from tests.privacy import openings, redis_values

OURS, DIALLED = "+15555550100", "+15555554102"
ROUTE = Route(OURS, "t1", Agent(name="desk", prompt="p", tenant="t1"))
ROUTING = {"carrier": "telnyx", "region": "international", "country": "US", "reason": "r"}
MESSAGE = "Your parcel 7731 arrives tomorrow between nine and noon."


def found_in_clear(url: str, needle: bytes) -> bool:
    client = sync_redis.Redis.from_url(url)
    try:
        return any(needle in blob for *_, v in redis_values(client) for blob in openings(v))
    finally:
        client.close()


async def test_the_message_is_sealed_and_opened_with_the_tenants_key(
    redis: Redis, redis_server: str
) -> None:
    store = sealing_calls(redis)
    request = VoicemailRequest("leave_message", MESSAGE)
    call_id = await store.open_outbound(ROUTE, DIALLED, 100.0, ROUTING, voicemail_request=request)
    await redis.set("probe", b"between nine and noon")  # positive control of the search
    assert found_in_clear(redis_server, b"between nine and noon")
    await redis.delete("probe")
    assert not found_in_clear(redis_server, b"between nine and noon")
    vm = await store.voicemail(call_id)
    assert vm is not None and (vm.action, vm.message, vm.answered_by) == (
        "leave_message",
        MESSAGE,
        "",
    )
    record = await store.get(call_id)
    assert record is not None and record.voicemail_action == "leave_message"
    # Offboarding destroys the tenant's key: the message cannot be read any more.
    await KeyRing(redis, MASTER_KEY).destroy("t1")
    vm = await sealing_calls(redis).voicemail(call_id)
    assert vm is not None and vm.message == UNREADABLE


async def test_a_call_without_detection_has_no_voicemail(redis: Redis) -> None:
    store = sealing_calls(redis)
    call_id = await store.open_outbound(ROUTE, DIALLED, 100.0, ROUTING)
    assert await store.voicemail(call_id) is None
    record = await store.get(call_id)
    assert record is not None and record.voicemail_action == "" and record.answered_by == ""


async def test_results_merge_whatever_their_order(redis: Redis) -> None:
    store = sealing_calls(redis)
    machine = MachineDetection("v3:a", AnsweredBy.MACHINE, "machine", final=False)
    beep = MachineDetection("v3:a", AnsweredBy.MACHINE, "beep_detected", True, True)
    merged = []
    for order in ((machine, beep), (beep, machine)):
        call_id = await store.open_outbound(
            ROUTE, DIALLED, 100.0, ROUTING, voicemail_request=VoicemailRequest("hang_up")
        )
        for result in order:
            got = await store.machine_detected(call_id, result, 101.0)
            assert got is not None
        vm = await store.voicemail(call_id)
        assert vm is not None
        merged.append((vm.answered_by, vm.greeting_ended, vm.final))
        events = [e for e in await store.events(call_id) if e.type == CallEventType.VOICEMAIL]
        assert [e.data["answered_by"] for e in events] == ["machine", "machine"]
        assert {e.data["action"] for e in events} == {"hang_up"}
    assert merged == [("machine", True, True)] * 2


async def test_a_result_about_a_call_that_is_over_is_recorded_with_its_state(
    redis: Redis,
) -> None:
    store = sealing_calls(redis)
    call_id = await store.open_outbound(
        ROUTE, DIALLED, 100.0, ROUTING, voicemail_request=VoicemailRequest("hang_up")
    )
    await store.advance(call_id, CallState.COMPLETED, 110.0)
    got = await store.machine_detected(
        call_id, MachineDetection("x", AnsweredBy.HUMAN, "human"), 111.0
    )
    assert got is not None and got[0] is CallState.COMPLETED and got[1].answered_by == "human"
    assert (
        await store.machine_detected("call_nope", MachineDetection("x", AnsweredBy.HUMAN, "h"), 1)
        is None
    )
