"""Plain helpers shared by test modules; the fixtures and the live platform are in conftest.py."""

from __future__ import annotations

import asyncio
import audioop
import os
import re
import secrets
import subprocess
import sys
import time
import unicodedata
from typing import Any

import httpx
import llama_cpp
import numpy as np
import phonenumbers
import soxr
from pipecat.audio.utils import create_stream_resampler, ulaw_to_pcm
from pipecat.frames.frames import InputAudioRawFrame
from piper import SynthesisConfig
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.base import InboundCall
from carriers.simulation import trim_silence
from recordings.crypto import Identity
from recordings.objects import EncryptedObjects
from routing import Agent, Directory
from routing.directory import Route
from store import keys
from tests.conftest import (
    OPERATOR_TOKEN,
    REPO,
    LiveServer,
    encrypted_store,
    sealing_calls,
    write_transcript,
)
from voice.engines import PHONE_RATE, synthesize
from voice.session import STT_RATE

# The API of a running platform.


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_tenant(server: LiveServer, name: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post("/v1/operator/tenants", json={"name": name}, headers=auth(OPERATOR_TOKEN))
    assert r.status_code == 201, r.text
    return r.json()["tenant_id"], r.json()["api_key"]


async def carrier_up(server: LiveServer, carrier: str) -> None:
    """Wait out a carrier marked down by an earlier test (BONMONIQ_CARRIER_DOWN_SECONDS)."""
    async with httpx.AsyncClient(base_url=server.url) as c:
        for _ in range(50):
            if (await c.get("/readyz")).json()["carriers"][carrier] == "up":
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{carrier} stays down")


#: The number ``tenant_with_number`` attaches: outbound calls leave from it.
FROM = "+15555550600"


async def tenant_with_number(
    server: LiveServer, redis: Redis, name: str, limits: dict[str, int] | None = None
) -> tuple[str, str]:
    await carrier_up(server, "telnyx")
    tenant_id, admin = await new_tenant(server, name)
    async with httpx.AsyncClient(base_url=server.url) as c:
        agent = (
            await c.post(
                "/v1/agents", json={"name": "out", "system_prompt": "p"}, headers=auth(admin)
            )
        ).json()
        if limits is not None:
            r = await c.put(
                f"/v1/operator/tenants/{tenant_id}/limits",
                json=limits,
                headers=auth(OPERATOR_TOKEN),
            )
            assert r.status_code == 200, r.text
    d = Directory(redis)
    await d.attach(
        FROM,
        await d.get_agent_by_id(agent["agent_id"], tenant_id),
        {"carrier": "telnyx", "carrier_id": "x"},
    )
    return tenant_id, admin


async def scrape(server: LiveServer) -> dict[str, float]:
    """``/metrics`` (on the metrics listener) parsed: each sample line's name and labels to its
    value."""
    async with httpx.AsyncClient() as c:
        text = (await c.get(server.metrics_url)).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def keys_of(server: LiveServer, admin: str) -> dict[str, str]:
    """An editor and a viewer key made by ``admin``: the keys of each role and their ids."""
    out = {"admin": admin}
    async with httpx.AsyncClient(base_url=server.url) as c:
        for role in ("editor", "viewer"):
            r = await c.post("/v1/keys", json={"role": role}, headers=auth(admin))
            out[role] = r.json()["api_key"]
            out[f"{role}_id"] = r.json()["key_id"]
    return out


async def seed(server: LiveServer, redis: Redis, name: str, number: str) -> dict[str, str]:
    """A tenant with keys of each role, an agent, a number and a call with a transcript."""
    tenant_id, admin = await new_tenant(server, name)
    ids = await keys_of(server, admin) | {"tenant_id": tenant_id}
    async with httpx.AsyncClient(base_url=server.url) as c:
        agent = (
            await c.post(
                "/v1/agents", json={"name": "desk", "system_prompt": "p"}, headers=auth(admin)
            )
        ).json()
    d = Directory(redis)
    route = await d.attach(
        number,
        await d.get_agent_by_id(agent["agent_id"], tenant_id),
        {"carrier": "telnyx", "carrier_id": "x"},
    )
    store = sealing_calls(redis)
    call_id, _, _ = await store.open_inbound(
        InboundCall(
            "twilio", "CA" + secrets.token_hex(16), "AC1", "+15555551234", number, "ringing"
        ),
        route,
        time.time(),
        {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"},
    )
    await write_transcript(
        encrypted_store(server, redis),
        tenant_id,
        call_id,
        [("caller", f"secret of {name}", time.time())],
    )
    return ids | {
        "agent_id": agent["agent_id"],
        "number": number,
        "call_id": call_id,
        "key_id": ids["viewer_id"],
    }


def bonmoniq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``bonmoniq`` command line, run as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# Calls and recordings in Redis.

ROUTING = {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"}


async def a_call(
    redis: Redis,
    objects: EncryptedObjects,
    route: Route,
    caller: str,
    now: float,
    words: str = "hello",
    audio: bytes = b"\x01\x02" * 8000,
) -> str:
    """A call to ``route`` from ``caller`` with a transcript and a recording."""
    sid = "CA" + os.urandom(16).hex()
    call_id, _, _ = await CallStore(redis, objects).open_inbound(
        InboundCall("twilio", sid, "AC1", caller, route.number, "ringing"), route, now, ROUTING
    )
    await write_transcript(objects, route.tenant, call_id, [("caller", words, now)])
    writer = await objects.create(
        Identity(route.tenant, call_id, "recording"), format="pcm_s16le/8000/2"
    )
    await writer.append(audio)
    await writer.finalize()
    return call_id


async def agent_with_number(redis: Redis, tenant: str, name: str, number: str, days: int) -> Route:
    d = Directory(redis)
    agent = await d.add_agent(
        Agent(name=name, prompt="p", tenant=tenant, retention_days=days, recording=True)
    )
    return await d.attach(number, agent)


async def wait_closed(store: CallStore, call_id: str) -> None:
    for _ in range(100):
        if any(e.type == CallEventType.MEDIA_CLOSED for e in await store.events(call_id)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the platform never closed the media stream")


# Numbering plans.

#: Written out here, independently of territories.toml: part of the EU, with their member state.
EU_TERRITORIES = {
    "RE": "FR",
    "GP": "FR",
    "MQ": "FR",
    "GF": "FR",
    "YT": "FR",
    "MF": "FR",
    "AX": "FI",
}


def valid_in(number: str) -> set[str]:
    """The numbering plan's regions for ``number``: its own and any other it is valid in."""
    parsed = phonenumbers.parse(number, None)
    own = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code
    )
    return {own} | {
        r
        for r in phonenumbers.region_codes_for_country_code(parsed.country_code)
        if phonenumbers.is_valid_number_for_region(parsed, r)
    }


# Audio: the caller's side of a call.

FRAME = PHONE_RATE * 20 // 1000 * 2  # bytes of a 20 ms carrier frame
UP = STT_RATE // PHONE_RATE  # bytes at the pipeline's rate per byte at the carrier's


#: Piper without its random variation: a line is the same audio on every run.
STEADY = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


def say(voice, text: str) -> bytes:  # type: ignore[no-untyped-def]
    return trim_silence(synthesize(voice, text, PHONE_RATE, STEADY))


def pause(seconds: float) -> bytes:
    return bytes(int(PHONE_RATE * seconds) * 2)


async def stt_frames(pcm8k: bytes) -> list[InputAudioRawFrame]:
    """``pcm8k`` as the Twilio codec hands it to the pipeline: μ-law, then 16 kHz frames."""
    resampler = create_stream_resampler()
    frames = []
    for i in range(0, len(pcm8k) - FRAME + 1, FRAME):
        pcm = await ulaw_to_pcm(
            audioop.lin2ulaw(pcm8k[i : i + FRAME], 2), PHONE_RATE, STT_RATE, resampler
        )
        frames.append(InputAudioRawFrame(audio=pcm, sample_rate=STT_RATE, num_channels=1))
    return frames


def hear(whisper, pcm8k: bytes) -> str:  # type: ignore[no-untyped-def]
    """What Whisper hears in 8 kHz PCM."""
    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32) / 32768
    segments, _ = whisper.transcribe(soxr.resample(samples, 8000, 16000), language="en")
    return " ".join(s.text for s in segments)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


#: espeak-ng's settings for a caller speaking each language: a lower voice variant, pitch
#: and a gap between words, which Whisper base still understands after 8 kHz and G.711.
CALLER_ESPEAK: dict[str, tuple[str, ...]] = {
    "fr": ("-v", "fr+m5", "-s", "165", "-p", "30", "-g", "6"),
}


def say_in(language: str, text: str, *settings: str) -> bytes:
    """``text`` said by espeak-ng in ``language``: 8 kHz 16-bit PCM, silence trimmed.

    ``settings`` override the caller's (espeak-ng takes the last of an option). The same text
    gives the same audio on every run (espeak-ng has no randomness).
    """
    wav = subprocess.run(
        ["espeak-ng", *CALLER_ESPEAK[language], *settings, "--stdout"],
        input=text.encode(),
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    data = wav[wav.index(b"data", 12) + 8 :]
    samples = np.frombuffer(data[: len(data) - len(data) % 2], dtype=np.int16)
    phone = soxr.resample(samples.astype(np.float32) / 32768, 22050, PHONE_RATE)
    return trim_silence((np.clip(phone, -1, 1) * 32767).astype(np.int16).tobytes())


def hear_in(whisper, language: str, pcm8k: bytes) -> str:  # type: ignore[no-untyped-def]
    """What Whisper, told ``language``, hears in 8 kHz PCM."""
    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32) / 32768
    segments, _ = whisper.transcribe(soxr.resample(samples, 8000, 16000), language=language)
    return " ".join(s.text for s in segments)


def plain(text: str) -> str:
    """``text`` in lower case without its accents ("Enregistré" -> "enregistre")."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


#: The bakery agent's prompt in end-to-end calls.
BAKERY = "You are Sam, the receptionist of a bakery. It opens at 7 am Monday to Saturday."


# The embedded LLM.

#: A system prompt for the real SmolLM2 model.
SYSTEM = (
    "You are the phone assistant of Rosa's Bakery. We open 7 a.m. to 6 p.m. Monday to "
    "Saturday. We sell bread, pastries and cakes; custom birthday cakes need two days' notice."
)


def chatml(system: str, question: str) -> str:
    """SmolLM2's chat template, as the server applies it."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def greedy(model: llama_cpp.Llama, tokens: list[int], n: int) -> list[int]:
    out = []
    for token in model.generate(tokens, temp=0.0):
        out.append(token)
        if len(out) == n:
            break
    return out


async def data_keys(redis: Redis) -> set[str]:
    """The keys in ``redis`` but the serving processes' liveness (renewed on their own clock)."""
    live = keys.node("")
    return {
        k for k in map(str, await redis.keys("*")) if k != keys.nodes() and not k.startswith(live)
    }


async def until(check: Any, within: float) -> Any:
    """Poll ``check`` (sync or async) until it returns something true, for ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            got = check()
            if asyncio.iscoroutine(got):
                got = await got
            if got:
                return got
            await asyncio.sleep(0.2)
