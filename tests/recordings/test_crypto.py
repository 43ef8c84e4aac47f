"""Envelope encryption and STREAM segments: round trips, tampering, truncation, moved ciphertexts,
other tenants' keys, KEK rotation and crypto-shredding, on both storage backends."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from calls.archive import CallArchive
from recordings.crypto import DecryptionError, Identity, Sealer, new_key, open_object, unwrap
from recordings.keyring import KeyRing, MasterKeyError, NoTenantKey, load_master_key
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage, ObjectStorage, S3Storage

A = Identity("ten_a", "call_1", "recording")


def seal_all(key: bytes, identity: Identity, chunks: list[bytes]) -> bytes:
    sealer = Sealer(key, identity)
    out = sealer.header
    for c in chunks[:-1]:
        out += sealer.seal(c)
    return out + sealer.seal(chunks[-1] if chunks else b"", last=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_round_trip_and_every_flipped_byte_fails(chunks: list[bytes]) -> None:
    key = new_key()
    data = seal_all(key, A, chunks)
    opened = open_object(key, A, data)
    assert opened.complete and opened.plaintext == b"".join(chunks)
    pos = random.randrange(len(data))
    bad = bytearray(data)
    bad[pos] ^= 1 << random.randrange(8)
    with pytest.raises(DecryptionError):
        result = open_object(key, A, bytes(bad))
        # A flipped length byte can only shorten what is read: never complete, never silent.
        if not result.complete:
            raise DecryptionError("reported truncated")


def test_truncation_is_reported_with_the_readable_prefix() -> None:
    key = new_key()
    chunks = [bytes([i]) * 100 for i in range(5)]
    data = seal_all(key, A, chunks)
    segment = 4 + 100 + 16
    header = len(data) - 5 * segment
    for cut in range(header, len(data)):
        opened = open_object(key, A, data[:cut])
        whole = (cut - header) // segment
        assert not opened.complete and opened.reason
        assert opened.plaintext == b"".join(chunks[:whole])
    # Appended bytes after the last segment are an error, not ignored.
    with pytest.raises(DecryptionError):
        open_object(key, A, data + data[-segment:])


def test_ciphertext_of_another_object_or_tenant_fails() -> None:
    key = new_key()
    data = seal_all(key, A, [b"hello"])
    for other in (
        Identity("ten_b", "call_1", "recording"),
        Identity("ten_a", "call_2", "recording"),
        Identity("ten_a", "call_1", "transcript"),
        Identity("ten_a", "call_1", "recording", version=2),
    ):
        with pytest.raises(DecryptionError):
            open_object(key, other, data)
    with pytest.raises(DecryptionError):
        open_object(new_key(), A, data)


def test_master_key_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    with pytest.raises(MasterKeyError, match="no master key"):
        load_master_key(None, path)
    created = load_master_key(None, path, create=True)
    assert oct(path.stat().st_mode & 0o777) == "0o600" and len(created) == 32
    assert load_master_key(None, path) == created
    path.chmod(0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_master_key(None, path)
    with pytest.raises(MasterKeyError, match="32 bytes"):
        load_master_key("c2hvcnQ=", path)


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStorage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "objects")
        return
    endpoint = request.getfixturevalue("s3")
    store = S3Storage(endpoint, "recordings", "test", "test")
    bucket = "rec-" + os.urandom(4).hex()
    store.bucket = bucket
    await store._call("create_bucket")
    yield store


async def test_objects_round_trip_rotate_and_shred(redis: Redis, storage: ObjectStorage) -> None:
    ring = KeyRing(redis, new_key())
    objects = EncryptedObjects(redis, ring, storage)
    writer = await objects.create(A, format="pcm")
    for i in range(3):
        await writer.append(bytes([i]) * 1000)
    await writer.finalize(b"end")
    info = await objects.info(writer.info.object_id)
    assert info is not None and info.state == "final" and info.extra["format"] == "pcm"
    assert (
        await objects.open(info)
    ).plaintext == b"\x00" * 1000 + b"\x01" * 1000 + b"\x02" * 1000 + b"end"
    # Another tenant's object on the same ring, and an unfinished object (a crash).
    b = await objects.create(Identity("ten_b", "call_9", "transcript"))
    await b.append(b"turn one")
    b_info = await objects.info(b.info.object_id)
    assert b_info is not None
    unfinished = await objects.open(b_info)
    assert not unfinished.complete and unfinished.plaintext == b"turn one"
    # A's KEK cannot open B's data key, whatever identity is claimed.
    with pytest.raises(DecryptionError):
        await ring.data_key(A, b_info.wrapped_key)
    _, kek_a = await ring._kek("ten_a")
    with pytest.raises(DecryptionError):
        unwrap(kek_a, b_info.wrapped_key.wrapped, b"bonmoniq/dek/" + b_info.identity.aad())
    # Rotation re-wraps the data keys; the stored content is byte for byte the same.
    before = (await storage.read(info.name)).data
    assert await objects.rotate_tenant_key("ten_a", CallArchive(redis)) == 1
    rotated = await objects.info(info.object_id)
    assert rotated is not None and rotated.wrapped_key.kek_version == 2
    assert (await storage.read(info.name)).data == before
    assert (await objects.open(rotated)).complete
    assert set(await redis.hkeys("kek:ten_a")) == {"current", "v2"}
    # Crypto-shredding: nothing left opens the object.
    await ring.destroy("ten_a")
    with pytest.raises(NoTenantKey):
        await objects.open(rotated)
    assert (await objects.open(b_info)).plaintext == b"turn one"  # B untouched
    # A finalized object that lost its end is corrupt, not merely truncated.
    if isinstance(storage, LocalStorage):
        w = await objects.create(Identity("ten_b", "call_9", "recording"))
        await w.append(b"x" * 50)
        await w.finalize()
        path = storage.root / w.info.name
        path.write_bytes(path.read_bytes()[:-10])
        with pytest.raises(DecryptionError, match="truncated"):
            await objects.open(await objects.info(w.info.object_id))  # type: ignore[arg-type]
        # A ciphertext copied onto another object's path fails.
        shutil.copy(path, storage.root / b.info.name)
        with pytest.raises(DecryptionError):
            await objects.open(b_info)


async def test_clear_transcripts_of_earlier_versions_are_encrypted(
    redis: Redis, tmp_path: Path
) -> None:
    import json

    from recordings.migrate import migrate_clear_transcripts
    from recordings.transcripts import read_turns

    await redis.hset("call:call_old", mapping={"tenant": "ten_a", "created_at": "1.0"})
    turn = {"role": "caller", "text": "my secret order", "at": 2.0, "interrupted": False}
    await redis.rpush("call:call_old:transcript", json.dumps(turn))
    event = {
        "type": "caller_turn",
        "call_id": "call_old",
        "at": 2.0,
        "data": {"text": "my secret order"},
    }
    await redis.rpush("call:call_old:events", json.dumps(event))
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), LocalStorage(tmp_path))
    assert await migrate_clear_transcripts(redis, CallArchive(redis), objects) == 1
    turns, complete = await read_turns(objects, "call_old")
    assert complete and [t.text for t in turns] == ["my secret order"]
    assert not await redis.exists("call:call_old:transcript")
    assert json.loads((await redis.lrange("call:call_old:events", 0, -1))[0])["data"] == {
        "chars": 15
    }
    assert await migrate_clear_transcripts(redis, CallArchive(redis), objects) == 0
