"""A caller's objection that lands while a transcript turn or a recording is being stored leaves
nothing stored: discard and create/append take turns, on local files and on S3 (moto server).

The interleaving is forced by real storage backends whose ``create`` (or an append) pauses until
the test lets it go, with the objection arriving during the pause.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from recordings.crypto import Identity, new_key
from recordings.keyring import KeyRing
from recordings.objects import EncryptedObjects
from recordings.storage import Appender, LocalStorage, S3Storage
from recordings.transcripts import TranscriptLog, TurnRecord
from voice.recorder import CallRecorder


class Pause:
    """Where a storage operation stops until the test releases it."""

    def __init__(self, at_append: int | None = None) -> None:
        # at_append None: pause in create; N: pause before the Nth append (0: the header)
        self.at_append = at_append
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.appends = 0

    async def hold(self) -> None:
        self.entered.set()
        await self.release.wait()


class _PausingAppender:
    def __init__(self, inner: Appender, pause: Pause) -> None:
        self.inner, self.pause = inner, pause

    async def append(self, data: bytes) -> None:
        n = self.pause.appends
        self.pause.appends += 1
        if n == self.pause.at_append:
            await self.pause.hold()
        await self.inner.append(data)

    async def finalize(self) -> None:
        await self.inner.finalize()


class _Pausing:
    """A storage backend whose create, appends and deletes stop where the test says."""

    pause: Pause
    #: Set: each delete stops until the test releases it.
    delete_pause: Pause | None = None

    async def create(self, name: str) -> Appender:
        if self.pause.at_append is None:
            await self.pause.hold()
        return _PausingAppender(await super().create(name), self.pause)  # type: ignore[misc]

    async def delete(self, name: str) -> None:
        if self.delete_pause is not None:
            await self.delete_pause.hold()
        await super().delete(name)  # type: ignore[misc]


class PausingLocal(_Pausing, LocalStorage):
    pass


class PausingS3(_Pausing, S3Storage):
    pass


@pytest.fixture(params=["local", "s3"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[PausingLocal | PausingS3]:
    if request.param == "local":
        yield PausingLocal(tmp_path / "objects")
        return
    store = PausingS3(request.getfixturevalue("s3"), "recordings", "test", "test")
    store.bucket = "race-" + os.urandom(4).hex()
    await store._call("create_bucket")
    yield store


async def _let_run() -> None:
    """Let tasks just created run up to their first wait (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _nothing_stored(
    redis: Redis, objects: EncryptedObjects, storage: object, call: str
) -> None:
    assert await objects.of_call(call) == []
    assert [k async for k in redis.scan_iter("obj:*")] == []
    assert await storage.names() == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("at_append", [None, 1], ids=["in-create", "in-append"])
async def test_objection_during_a_transcript_write_leaves_nothing(
    redis: Redis, storage: PausingLocal | PausingS3, at_append: int | None
) -> None:
    storage.pause = Pause(at_append)
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), storage)
    log = TranscriptLog(objects, Identity("t1", "call-race", "transcript"), 1e12)
    write = asyncio.create_task(log.add(TurnRecord("caller", "my card number is 4242", 1.0)))
    await storage.pause.entered.wait()  # the turn is inside storage now
    objection = asyncio.create_task(log.discard())
    await _let_run()
    storage.pause.release.set()
    await asyncio.gather(write, objection)
    await log.add(TurnRecord("caller", "and my address", 2.0))  # after the objection
    await log.finish()
    await _nothing_stored(redis, objects, storage, "call-race")


@pytest.mark.parametrize("at_append", [None, 0], ids=["in-create", "in-header"])
async def test_objection_while_the_recording_is_created_leaves_nothing(
    redis: Redis, storage: PausingLocal | PausingS3, at_append: int | None
) -> None:
    storage.pause = Pause(at_append)
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), storage)
    recorder = CallRecorder(objects, Identity("t1", "call-rec", "recording"), 1e12)
    start = asyncio.create_task(recorder.start())
    await storage.pause.entered.wait()
    objection = asyncio.create_task(recorder.discard())
    await _let_run()
    storage.pause.release.set()
    await asyncio.gather(start, objection)
    await recorder._on_audio(None, b"\x01\x02" * 8000, 8000, 2)  # audio after the objection
    await recorder.finish()
    await _nothing_stored(redis, objects, storage, "call-rec")


async def test_a_transcript_without_objection_is_still_stored(
    redis: Redis, storage: PausingLocal | PausingS3
) -> None:
    storage.pause = Pause(None)
    storage.pause.release.set()
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), storage)
    log = TranscriptLog(objects, Identity("t1", "call-ok", "transcript"), 1e12)
    await log.add(TurnRecord("caller", "hello", 1.0))
    await log.finish()
    [info] = await objects.of_call("call-ok")
    assert (await objects.open(info)).complete


async def test_an_objection_whose_call_is_cancelled_mid_deletion_still_deletes_everything(
    redis: Redis, storage: PausingLocal | PausingS3
) -> None:
    # The caller presses 9 and hangs up: the pipeline task running the discard is cancelled
    # while storage deletes; the deletion goes on, and finishing the call waits for it.
    storage.pause = Pause(None)
    storage.pause.release.set()
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), storage)
    log = TranscriptLog(objects, Identity("t1", "call-gone", "transcript"), 1e12)
    await log.add(TurnRecord("caller", "my card number is 4242", 1.0))
    recorder = CallRecorder(objects, Identity("t1", "call-gone", "recording"), 1e12)
    await recorder.start()
    await recorder._on_audio(None, b"\x01\x02" * 8000, 8000, 2)
    storage.delete_pause = Pause()
    objections = [asyncio.create_task(log.discard()), asyncio.create_task(recorder.discard())]
    await storage.delete_pause.entered.wait()  # a deletion is inside storage now
    for task in objections:
        task.cancel()
    await asyncio.gather(*objections, return_exceptions=True)
    storage.delete_pause.release.set()
    await log.finish()
    await recorder.finish()
    await _nothing_stored(redis, objects, storage, "call-gone")
