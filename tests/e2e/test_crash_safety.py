"""The platform killed with SIGKILL at random points of recorded calls, 20 times: each recording
is then complete and decryptable or detectably truncated (its prefix decrypts), never silently
corrupt, and no plaintext audio is left anywhere under the platform's directory."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.simulation import trim_silence
from carriers.twilio.simulator import TwilioSimulator
from llm import EmbeddedLLMServer
from models import Role, profile_models, verify_model
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, REPO, encrypted_store, start_server
from tests.helpers import BAKERY
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow
KILLS = 20


async def recording_started(client: Redis, limit_s: float) -> str | None:
    """The newest call once its recording has started."""
    for _ in range(int(limit_s / 0.05)):
        newest = await client.zrevrange("calls", 0, 0)
        if newest:
            events = await client.lrange(f"call:{newest[0]}:events", 0, -1)
            if any(CallEventType.RECORDING_STARTED.value in e for e in events):
                return str(newest[0])
        await asyncio.sleep(0.05)
    return None


async def test_sigkill_during_recording_never_corrupts_silently(
    redis_server: str, tmp_path: Path, voice
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261126)
    url = redis_server.rsplit("/", 1)[0] + "/5"
    client = Redis.from_url(url, decode_responses=True)
    await client.flushdb()
    d = Directory(client)
    await d.add_agent(
        Agent(
            name="bakery", prompt=BAKERY, recording=True, announcement="This AI call is recorded."
        )
    )
    await d.add_number("+15555550100", "bakery")
    line = trim_silence(
        synthesize(voice, "What time do you open on Saturday? And on Sunday?", PHONE_RATE)
    )
    gguf = verify_model(profile_models("cpu")[Role.LLM], REPO / "var" / "models").files[0].path
    var = tmp_path / "var"
    var.mkdir()
    outcomes: dict[str, int] = {"complete": 0, "truncated": 0, "none": 0}
    with EmbeddedLLMServer(gguf, "smollm2-135m-instruct", tmp_path / "llm.log") as llm:
        for _ in range(KILLS):
            server = start_server(url, var, BONMONIQ_LLM_URL=llm.v1)
            sim = TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
            call = asyncio.create_task(
                sim.run([("q", line)], greeting_timeout=20, reply_timeout=20)
            )
            started = await recording_started(client, 30)
            assert started, server.log.read_text()[-2000:]
            await asyncio.sleep(rng.uniform(0.0, 3.0))
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call, 15)
            objects = encrypted_store(server, client)
            found = await objects.of_call(started, "recording")
            if not found:
                outcomes["none"] += 1
                continue
            opened = await objects.open(found[0])  # raises on corruption: never silent
            outcomes["complete" if opened.complete else "truncated"] += 1
            if not opened.complete:
                assert opened.reason and len(opened.plaintext) % 4 == 0  # whole stereo frames
    await client.aclose()
    print("crash outcomes", outcomes)
    assert sum(outcomes.values()) == KILLS and outcomes["truncated"] >= KILLS // 2, outcomes
    # No plaintext anywhere under the platform's directory: no WAV header, no audio window.
    at_rest = b"".join(p.read_bytes() for p in var.rglob("*") if p.is_file())
    assert b"RIFF" not in at_rest
    objects = encrypted_store(server, Redis.from_url(url, decode_responses=True))
    for info in [
        i
        for c in await objects.redis.zrange("calls", 0, -1)
        for i in await objects.of_call(str(c), "recording")
    ]:
        pcm = (await objects.open(info)).plaintext
        for i in range(0, len(pcm) - 64, 8000):
            window = pcm[i : i + 64]
            if np.abs(np.frombuffer(window, dtype=np.int16)).max() > 500:
                assert window not in at_rest
