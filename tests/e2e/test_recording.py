"""Recorded calls end to end: the consent gate, encryption at rest, the caller's objection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.simulation import trim_silence
from carriers.twilio.simulator import TwilioSimulator
from recordings.objects import EncryptedObjects
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store, encrypted_store
from tests.helpers import BAKERY, hear, wait_closed, words
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow


async def recorded_bakery(client: Redis, record: bool = True) -> None:
    d = Directory(client)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY, recording=record))
    await d.add_number("+15555550100", "bakery")


async def everything_stored(server: LiveServer, client: Redis) -> bytes:
    """Every byte at rest: storage files, every Redis value, the platform's logs."""
    out = bytearray()
    for path in (server.log.parent / "objects").rglob("*"):
        if path.is_file():
            out += path.read_bytes()
    for key in await client.keys("*"):
        kind = await client.type(key)
        value: object = {
            "string": client.get,
            "hash": client.hgetall,
            "list": lambda k: client.lrange(k, 0, -1),
            "set": client.smembers,
            "zset": lambda k: client.zrange(k, 0, -1),
            "stream": lambda k: client.xrange(k),
        }[kind](key)
        out += (key + json.dumps(await value, default=str)).encode()  # type: ignore[misc]
    out += server.log.read_bytes()
    return bytes(out)


def channels(pcm: bytes) -> tuple[np.ndarray, np.ndarray]:
    stereo = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2)
    return stereo[:, 0].copy(), stereo[:, 1].copy()


async def test_recording_starts_after_the_announcement_and_nothing_is_plaintext(
    live_server: LiveServer, live_redis: Redis, voice, whisper
) -> None:  # type: ignore[no-untyped-def]
    await recorded_bakery(live_redis)
    store = call_store(live_server, live_redis)
    objects: EncryptedObjects = encrypted_store(live_server, live_redis)
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
    line = trim_silence(synthesize(voice, "Do you bake sourdough bread on Sundays?", PHONE_RATE))
    result = await sim.run([("question", line)])
    await wait_closed(store, result.call_id)

    events = await store.events(result.call_id)
    played = next(e.at for e in events if e.type == CallEventType.ANNOUNCEMENT_PLAYED)
    assert CallEventType.RECORDING_STARTED in [e.type for e in events]
    [info] = await objects.of_call(result.call_id, "recording")
    assert info.state == "final" and info.extra["format"] == "pcm_s16le/8000/2"
    # The gate opened after the output transport reported the announcement played.
    assert float(info.extra["started_at"]) >= played
    opened = await objects.open(info)
    assert opened.complete and len(opened.plaintext) > PHONE_RATE * 4  # seconds of audio
    caller, agent = channels(opened.plaintext)
    # What the recording heard first from the agent is the greeting, not the announcement.
    first_agent = hear(whisper, agent[: PHONE_RATE * 4].tobytes()).lower()
    assert "help" in words(first_agent) and not {"recorded", "ai"} & words(first_agent), first_agent
    assert {"sourdough", "bread", "sundays", "sunday"} & words(hear(whisper, caller.tobytes()))

    # At rest: no WAV header, no window of the recorded audio, no transcript turn in clear.
    turns = await store.transcript(result.call_id)
    assert len(turns) >= 2, live_server.tail()
    at_rest = await everything_stored(live_server, live_redis)
    assert b"RIFF" not in at_rest and b"WAVE" not in at_rest
    loud = [
        i
        for i in range(0, len(opened.plaintext) - 64, 4000)
        if np.abs(np.frombuffer(opened.plaintext[i : i + 64], dtype=np.int16)).max() > 500
    ]
    assert loud
    for i in loud:
        assert opened.plaintext[i : i + 64] not in at_rest
    said = [t.text for t in turns if t.text != "How can I help you today?"]  # greeting: config
    assert said
    for text in said:
        assert text.encode() not in at_rest, text


@pytest.mark.parametrize("how", ["dtmf", "spoken"])
async def test_objection_stops_the_recording_deletes_it_and_the_call_goes_on(
    live_server: LiveServer, live_redis: Redis, voice, how: str
) -> None:  # type: ignore[no-untyped-def]
    await recorded_bakery(live_redis)
    tenant = "default"
    store = call_store(live_server, live_redis)
    objects = encrypted_store(live_server, live_redis)
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
    dtmf = json.dumps(
        {
            "event": "dtmf",
            "streamSid": sim.stream_sid,
            "sequenceNumber": "9",
            "dtmf": {"track": "inbound_track", "digit": "9"},
        }
    )
    lines = [
        (
            "question",
            trim_silence(synthesize(voice, "What time do you open on Saturday?", PHONE_RATE)),
        )
    ]
    if how == "spoken":
        refusal = trim_silence(synthesize(voice, "Please do not record this call.", PHONE_RATE))
        lines.insert(0, ("refusal", refusal))
    result = await sim.run(lines, inject=(dtmf,) if how == "dtmf" else ())
    await wait_closed(store, result.call_id)
    events = await store.events(result.call_id)
    kinds = [e.type for e in events]
    assert CallEventType.RECORDING_OBJECTED in kinds
    # The call went on: the question was answered after the objection.
    assert result.turns[-1].latency_s is not None and CallEventType.AGENT_TURN in kinds
    assert await objects.of_call(result.call_id) == []  # recording and transcript deleted
    assert not list((live_server.log.parent / "objects").rglob(f"*{result.call_id}*/*"))
    audit = await live_redis.xrange(f"audit:{tenant}")
    assert [
        (e["action"], e["target"], e["key_id"])
        for _, e in audit
        if e["action"] == "recording.objected"
    ] == [("recording.objected", result.call_id, "caller")]
    objected = next(e for e in events if e.type == CallEventType.RECORDING_OBJECTED)
    assert objected.data["how"] == how


async def test_no_recording_when_the_agent_does_not_record(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    await recorded_bakery(live_redis, record=False)
    store = call_store(live_server, live_redis)
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
    line = trim_silence(synthesize(voice, "Are you open on Sunday?", PHONE_RATE))
    result = await sim.run([("question", line)])
    await wait_closed(store, result.call_id)
    objects = encrypted_store(live_server, live_redis)
    assert await objects.of_call(result.call_id, "recording") == []
    assert len(await objects.of_call(result.call_id, "transcript")) == 1  # transcripts: on
