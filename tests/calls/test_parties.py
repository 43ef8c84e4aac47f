"""A call's parties on a real Redis: sealed under the tenant's key, found by keyed digest."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import redis as sync_redis
from redis.asyncio import Redis

from calls.archive import CallArchive
from calls.events import CallEventType
from calls.store import CallStore
from carriers.base import InboundCall
from recordings.crypto import new_key
from recordings.keyring import KeyRing
from recordings.lifecycle import Lifecycle
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage
from recordings.subjects import UNREADABLE, Parties
from routing import Agent, Route
from tests.conftest import MASTER_KEY, sealing_calls
from tests.helpers import bonmoniq
from tests.privacy import PHONE, openings, redis_values

CALLER, OURS, DIALLED = "+15555554101", "+15555550100", "+15555554102"
ROUTE = Route(OURS, "t1", Agent(name="desk", prompt="p", tenant="t1"))
ROUTING = {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"}


def inbound(caller: str = CALLER, sid: str = "CA" + "7" * 32) -> InboundCall:
    return InboundCall("twilio", sid, "AC1", caller, OURS, "ringing")


def clear_numbers(url: str) -> list[str]:
    """Every phone number found in clear in the database at ``url``, however encoded."""
    client = sync_redis.Redis.from_url(url)
    try:
        bare = [n[1:].encode() for n in (CALLER, OURS, DIALLED)]  # as Sinch writes them
        return [
            f"{key} {field}: {m.decode()}"
            for key, field, value in redis_values(client)
            for blob in openings(value)
            for m in [*PHONE.findall(blob), *(d for d in bare if d in blob)]
        ]
    finally:
        client.close()


async def test_parties_are_sealed_in_redis_and_opened_for_the_tenant(
    redis: Redis, redis_server: str
) -> None:
    await redis.set("probe", CALLER[1:])  # positive control: the search finds a bare number
    assert clear_numbers(redis_server), "the search finds nothing: it proves nothing"
    await redis.delete("probe")
    store = sealing_calls(redis)
    call_in, _, _ = await store.open_inbound(inbound(), ROUTE, 100.0, ROUTING)
    call_out = await store.open_outbound(ROUTE, DIALLED, 101.0, ROUTING)
    assert clear_numbers(redis_server) == []  # not in the record, its events or any index
    record_in, record_out = await store.get(call_in), await store.get(call_out)
    assert record_in is not None and record_out is not None
    assert (record_in.from_number, record_in.to_number) == (CALLER, OURS)
    assert (record_out.from_number, record_out.to_number) == (OURS, DIALLED)
    # Events name the number by its digest, the one erasure and the audit log use.
    parties = Parties(KeyRing(redis, MASTER_KEY))
    [opened] = await store.events(call_in)
    [placed] = await store.events(call_out)
    assert (opened.type, opened.data["to"]) == (CallEventType.INBOUND, parties.ref("t1", OURS))
    assert (placed.type, placed.data["to"]) == (CallEventType.OUTBOUND, parties.ref("t1", DIALLED))
    # Matched by digest, in whatever form the number is written.
    assert store.involves(record_in, "0015555554101") and store.involves(record_out, DIALLED)
    assert not store.involves(record_in, DIALLED)


async def test_erasure_and_export_find_calls_by_digest(redis: Redis, tmp_path: Path) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), LocalStorage(tmp_path))
    store, life = CallStore(redis, objects), Lifecycle(redis, objects, CallArchive(redis))
    mine, _, _ = await store.open_inbound(inbound("15555554101"), ROUTE, 100.0, ROUTING)
    other, _, _ = await store.open_inbound(inbound("+15555554103", "CA" + "8" * 32), ROUTE, 101.0)
    assert await life.calls_of("t1", "+1 555 555 4101") == [mine]
    assert await life.calls_of("t2", CALLER) == []  # another tenant's digest differs
    manifest = await life.export("t1", [mine], {})
    [entry] = json.loads(next(b for b in openings(manifest) if b.startswith(b"{")))["calls"]
    assert (entry["call"]["from_number"], entry["call"]["to_number"]) == ("15555554101", OURS)
    assert "parties_key" not in entry["call"] and "from_ref" not in entry["call"]
    assert (await life.erase_subject("t1", CALLER)).erased == [mine]
    assert await store.get(mine) is None and await store.get(other) is not None


async def test_crypto_shredding_and_tampering_leave_parties_unreadable(redis: Redis) -> None:
    store = sealing_calls(redis)
    a, _, _ = await store.open_inbound(inbound(), ROUTE, 100.0, ROUTING)
    b = await store.open_outbound(ROUTE, DIALLED, 101.0, ROUTING)
    # A sealed value moved to the other party's field does not open (the field is bound in).
    sealed = await redis.hmget(f"call:{b}", "from_number", "to_number")
    await redis.hset(f"call:{b}", mapping={"from_number": sealed[1], "to_number": sealed[0]})
    swapped = await store.get(b)
    assert swapped is not None and (swapped.from_number, swapped.to_number) == (UNREADABLE,) * 2
    await KeyRing(redis, MASTER_KEY).destroy("t1")  # offboarding
    shredded = await store.get(a)
    assert shredded is not None and shredded.state == "ringing"
    assert (shredded.from_number, shredded.to_number) == (UNREADABLE, UNREADABLE)


async def test_key_rotation_rewraps_the_parties_key(redis: Redis, tmp_path: Path) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path))
    store = CallStore(redis, objects)
    call_id = await store.open_outbound(ROUTE, DIALLED, 100.0, ROUTING)
    assert await objects.rotate_tenant_key("t1", CallArchive(redis)) == 1
    assert set(await redis.hkeys("kek:t1")) == {"v2", "current"}  # the old KEK is gone
    record = await store.get(call_id)
    assert record is not None and record.to_number == DIALLED


async def test_a_call_without_tenant_keeps_only_digest_and_masked_numbers(
    redis: Redis, redis_server: str
) -> None:
    store = sealing_calls(redis)
    call_id, _, state = await store.open_inbound(inbound(), None, 100.0)
    assert state == "rejected" and clear_numbers(redis_server) == []
    record = await store.get(call_id)
    assert record is not None and (record.from_number, record.to_number) == ("+1…01", "+1…00")
    assert store.involves(record, CALLER)


async def test_records_written_before_sealing_still_read_and_match(
    redis: Redis, tmp_path: Path
) -> None:
    # The old layout: parties in clear, as the carrier sent them (Sinch's cli has no "+").
    old = {
        "call_id": "call_old",
        "carrier": "sinch",
        "carrier_call_id": "s1",
        "tenant": "t1",
        "agent": "a1",
        "from_number": "15555554101",
        "to_number": "15555550100",
        "direction": "inbound",
        "state": "completed",
        "created_at": "1.0",
        "updated_at": "2.0",
    }
    await redis.hset("call:call_old", mapping=old)
    await redis.zadd("calls:t1", {"call_old": 1.0})
    store = sealing_calls(redis)
    record = await store.get("call_old")
    assert record is not None and record.from_number == "15555554101"
    assert store.involves(record, CALLER) and not store.involves(record, DIALLED)
    objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path))
    assert await Lifecycle(redis, objects, CallArchive(redis)).calls_of("t1", CALLER) == [
        "call_old"
    ]
    await redis.delete("call:call_old")


async def test_a_store_without_key_ring_cannot_record_and_reads_nothing_sealed(
    redis: Redis,
) -> None:
    call_id, _, _ = await sealing_calls(redis).open_inbound(inbound(), ROUTE, 100.0, ROUTING)
    bare = CallStore(redis)
    record = await bare.get(call_id)
    assert record is not None and record.from_number == UNREADABLE
    try:
        await bare.open_outbound(ROUTE, DIALLED, 101.0, ROUTING)
    except RuntimeError as e:
        assert "key ring" in str(e)
    else:
        raise AssertionError("a call was recorded without sealing its parties")
    assert await redis.zcard("calls") == 1


def test_calls_show_opens_the_parties(redis_server: str, tmp_path: Path) -> None:
    url = redis_server.rsplit("/", 1)[0] + "/3"
    sync_redis.Redis.from_url(url).flushdb()
    env = {
        "BONMONIQ_REDIS_URL": url,
        "BONMONIQ_VAR_DIR": str(tmp_path),
        "BONMONIQ_LOG_LEVEL": "WARNING",
        "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
    }

    async def seed() -> str:
        client = Redis.from_url(url, decode_responses=True)
        try:
            return await sealing_calls(client).open_outbound(ROUTE, DIALLED, 100.0, ROUTING)
        finally:
            await client.aclose()

    call_id = asyncio.run(seed())
    shown = bonmoniq("calls", "show", call_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["from_number"], report["to_number"]) == (OURS, DIALLED)
    text = bonmoniq("calls", "show", call_id, env=env)
    assert f"{OURS} -> {DIALLED}" in text.stdout
    sync_redis.Redis.from_url(url).flushdb()
