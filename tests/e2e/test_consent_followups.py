"""The consent rules end to end: an objection during the announcement, a whole announcement.

A caller may object at any time, also while the announcement still plays: the objection counts
although nothing said before the announcement had played is transcribed or stored. And a call
always plays its whole announcement, even when the bounded phrase cache dropped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.simulation import (
    FRAME_SAMPLES,
    Conversation,
    SimulationError,
    SimulationResult,
    trim_silence,
)
from carriers.twilio.signature import SIGNATURE_HEADER, compute_signature
from carriers.twilio.simulator import TwilioSimulator, TwilioWire
from recordings.objects import EncryptedObjects
from routing import DEFAULT_ANNOUNCEMENT, Agent, Directory
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LiveServer,
    call_store,
    encrypted_store,
    free_port,
    start_redis,
    start_server,
    stop_server,
)
from tests.helpers import BAKERY, hear, wait_closed, words
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow

NUMBER = "+15555550100"


async def recorded_bakery(client: Redis) -> None:
    d = Directory(client)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY, recording=True))
    await d.add_number(NUMBER, "bakery")


async def call_speaking_at_once(
    sim: TwilioSimulator, line: bytes, listen_s: float = 30.0
) -> SimulationResult:
    """A Twilio call whose caller says ``line`` (8 kHz PCM) as soon as the stream starts,
    while the announcement plays, then listens until the agent is quiet and hangs up."""
    r = await sim.post_signed("/webhooks/twilio/voice", sim.voice_params())
    if r.status_code != 200:
        raise SimulationError(f"voice webhook answered {r.status_code}: {r.text[:200]}")
    stream = ET.fromstring(r.text).find("./Connect/Stream")
    assert stream is not None, r.text
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    result = SimulationResult(sim.call_sid, params.get("call_id", ""), r.text)
    url = stream.get("url", "")
    ws_url = url.replace(
        sim.public_url.replace("http", "ws", 1), sim.base_url.replace("http", "ws", 1), 1
    )
    headers = {SIGNATURE_HEADER: compute_signature(url, [], sim.auth_token)}
    async with websockets.connect(ws_url, additional_headers=headers, max_size=2**22) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(sim._start(params)))
        wire = TwilioWire(sim.stream_sid)
        talk = Conversation(ws, wire, result)
        receiver = asyncio.create_task(talk._receive())  # plays, and acknowledges marks
        try:
            step = FRAME_SAMPLES * 2
            await talk._clock(
                [line[i : i + step].ljust(step, b"\0") for i in range(0, len(line), step)]
            )
            done = asyncio.Event()
            await asyncio.gather(
                talk._clock([], done), talk._wait_quiet(done, listen_s, 2.0, False)
            )
            if not result.closed_by_platform:
                stop = wire.stop()
                if stop is not None:
                    await ws.send(stop)
                await ws.close()
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await receiver
    return result


async def call_playing_the_default(
    server: LiveServer, client: Redis, voice: object
) -> tuple[SimulationResult, dict[CallEventType, Any], float]:
    """A silent Twilio call to ``NUMBER`` whose announcement is the default one, played whole:
    the call's result, its events by type, and the announcement's duration."""
    store = call_store(server, client)
    sim = TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    result = await sim.run([], greeting_timeout=30.0)
    await wait_closed(store, result.call_id)
    events = {e.type: e for e in await store.events(result.call_id)}
    assert CallEventType.ANNOUNCEMENT_STARTED in events, server.tail()
    duration = float(events[CallEventType.ANNOUNCEMENT_STARTED].data["duration_s"])
    # Piper's timing varies a little from one synthesis to the next.
    expected = len(synthesize(voice, DEFAULT_ANNOUNCEMENT.strip(), PHONE_RATE)) / (2 * PHONE_RATE)
    assert duration == pytest.approx(expected, rel=0.1), (duration, expected)
    return result, events, duration


async def test_an_objection_said_during_the_announcement_counts_and_is_not_stored(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    await recorded_bakery(live_redis)
    store = call_store(live_server, live_redis)
    objects: EncryptedObjects = encrypted_store(live_server, live_redis)
    refusal = trim_silence(synthesize(voice, "Please don't record this.", PHONE_RATE))
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    result = await call_speaking_at_once(sim, bytes(PHONE_RATE // 2) + refusal)
    await wait_closed(store, result.call_id)

    events = await store.events(result.call_id)
    kinds = [e.type for e in events]
    objected = [e for e in events if e.type == CallEventType.RECORDING_OBJECTED]
    assert objected and objected[0].data["how"] == "spoken", (kinds, live_server.tail())
    assert CallEventType.RECORDING_STARTED not in kinds
    assert await objects.of_call(result.call_id, "recording") == []
    # Nothing of what the caller said is a turn: not stored, not answered by the LLM.
    turns = await store.transcript(result.call_id)
    assert not [t for t in turns if t.role == "caller"], turns
    assert not any("please" in words(t.text) for t in turns), turns


async def test_a_call_plays_its_whole_announcement_when_the_phrase_cache_keeps_nothing(
    tmp_path: Path, voice, whisper
) -> None:  # type: ignore[no-untyped-def]
    """A phrase cache that keeps nothing: every phrase is gone by the time the call starts,
    and the call synthesizes its announcement again rather than play an empty one."""
    dead = f"http://127.0.0.1:{free_port()}/v1"  # no LLM: the call says only fixed phrases
    redis_proc, redis_url = start_redis(tmp_path)
    server = start_server(
        redis_url, tmp_path, ready="/healthz", BONMONIQ_LLM_URL=dead, BONMONIQ_PHRASE_CACHE_MB="0"
    )
    client = Redis.from_url(server.redis_url, decode_responses=True)
    try:
        await recorded_bakery(client)
        result, events, duration = await call_playing_the_default(server, client, voice)
        assert CallEventType.ANNOUNCEMENT_PLAYED in events
        assert (
            events[CallEventType.RECORDING_STARTED].at
            >= events[CallEventType.ANNOUNCEMENT_PLAYED].at
        )
        # What the caller heard first is the announcement, all of it.
        pcm = np.frombuffer(bytes(result.agent_audio), dtype=np.int16)
        begin = int(np.argmax(np.abs(pcm) > 500))  # the first sound the caller heard
        first = pcm[begin : begin + int((duration + 0.5) * PHONE_RATE)].tobytes()
        heard = words(hear(whisper, first))
        assert {"assistant", "automated", "recorded"} <= heard, heard
    finally:
        await client.aclose()
        stop_server(server)
        redis_proc.kill()


async def test_an_agent_stored_with_an_incomplete_announcement_plays_the_default(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    """An agent written before announcements were checked (here "."): its calls play the
    language's default announcement, never the incomplete one."""
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY, announcement="."))
    await d.add_number(NUMBER, "bakery")
    await call_playing_the_default(live_server, live_redis, voice)
