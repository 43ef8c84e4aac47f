"""End to end from a browser: headless Chromium opens /try/<agent> and calls the agent.

Chromium's fake microphone plays the caller's question (the local Piper voice, after a
silence long enough for the connection and the announcement); the real speech models hear
and speak, the scripted LLM answers. The page measures the agent's audio (window.bonmoniq);
the test also records what the page receives, to hear what came first.
"""

from __future__ import annotations

import base64
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soxr
from redis.asyncio import Redis

from calls.events import CallEventType, order_violations
from calls.state import CallState
from carriers.simulation import trim_silence
from routing import Agent, Directory
from tests.browser import CHROMIUM, Browser, BrowserError, Page
from tests.conftest import LiveServer, call_store
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import STEADY, auth, new_tenant, until, words
from voice.announcement import announcement_for
from voice.engines import PHONE_RATE, synthesize
from voice.prompt import greeting

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing"),
]
QUESTION = "What time do you open on Saturday?"
ANSWER = "We open at nine on Saturday morning."
#: The fake microphone's rate: what a browser captures.
MIC_RATE = 48_000
#: Time for the page to connect and the platform to start the call, before the announcement.
CONNECTING_S = 4.0

#: A received sample above this (16-bit) is the agent speaking.
LOUD = 1000
#: Records what the page's <audio> element receives (16-bit PCM at the context's rate).
RECORD_REMOTE = """
((LOUD) => {
  window.heard = { rate: 0, chunks: [], quietS: 0 };
  const wait = setInterval(() => {
    const stream = document.getElementById("remote").srcObject;
    if (!stream) return;
    clearInterval(wait);
    const context = new AudioContext();
    window.heard.rate = context.sampleRate;
    const node = context.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (event) => {
      const samples = event.inputBuffer.getChannelData(0);
      const pcm = new Int16Array(samples.length);
      let peak = 0;
      for (let i = 0; i < samples.length; i++) {
        pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32767)));
        peak = Math.max(peak, Math.abs(pcm[i]));
      }
      window.heard.chunks.push(pcm);
      // Seconds since the last sample louder than speech's quietest (for "the agent is done").
      window.heard.quietS = peak > LOUD ? 0 : window.heard.quietS + samples.length / context.sampleRate;
    };
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination);
  }, 5);
  return true;
})(%d)
"""
HEARD = """
(() => {
  const parts = window.heard.chunks;
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) { bytes.set(new Uint8Array(p.buffer), at); at += p.byteLength; }
  let text = "";
  for (let i = 0; i < bytes.length; i += 32768) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
  }
  return { rate: window.heard.rate, pcm: btoa(text) };
})()
"""


def question_wav(voice: Any, path: Path, lead_s: float) -> Path:
    """The caller's question after ``lead_s`` seconds of silence: a 16-bit mono 48 kHz WAV."""
    spoken = trim_silence(synthesize(voice, QUESTION, MIC_RATE, STEADY))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(bytes(2 * int(MIC_RATE * lead_s)) + spoken + bytes(MIC_RATE))
    return path


def seconds(pcm: bytes, rate: int = PHONE_RATE) -> float:
    return len(pcm) / (2 * rate)


@pytest.fixture(scope="module")
async def browser(voice: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    """One Chromium for the module; its microphone says the question once the agent has spoken."""
    agent_speaks = announcement_for("", "en", None) + " " + greeting(Agent(name="x", prompt="p"))
    lead_s = CONNECTING_S + seconds(synthesize(voice, agent_speaks, PHONE_RATE)) + 1.0
    wav = question_wav(voice, tmp_path_factory.mktemp("browser") / "question.wav", lead_s)
    async with Browser.launch(fake_audio=wav) as started:
        yield started


async def webrtc_agent(server: LiveServer, redis: Redis, name: str) -> tuple[str, str]:
    """A tenant's admin key and its agent's id."""
    tenant, admin = await new_tenant(server, name)
    agent = await Directory(redis).add_agent(
        Agent(name="desk", prompt="You answer the bakery's phone.", tenant=tenant, recording=True)
    )
    return admin, agent.agent_id


async def token_for(server: LiveServer, admin: str, agent_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            f"/v1/agents/{agent_id}/webrtc/tokens", json={"ttl_s": 600}, headers=auth(admin)
        )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["try_url"] == f"/try/{agent_id}#token={body['token']}"
    return body


async def status(page: Page) -> dict[str, Any]:
    got: dict[str, Any] = await page.evaluate("({...window.bonmoniq})")
    return got


async def test_a_browser_calls_the_agent_hears_it_and_hangs_up(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    browser: Browser,
    whisper: Any,
) -> None:
    server = scripted_server
    admin, agent_id = await webrtc_agent(server, scripted_redis, "browser-owner")
    token = await token_for(server, admin, agent_id)
    scripted_llm.script(lambda _body: Reply.say(ANSWER))
    store = call_store(server, scripted_redis)

    page = await browser.open(server.url + token["try_url"])
    assert await page.evaluate("location.hash") == ""  # the token left the address bar
    await page.evaluate(RECORD_REMOTE % LOUD)
    try:
        await page.evaluate("window.bonmoniqCall()")
    except BrowserError as e:
        raise AssertionError(f"{e} {await status(page)} {page.errors}\n{server.tail()}") from e
    connected = await status(page)
    assert connected["state"] == "connected" and connected["callId"], connected
    call_id = connected["callId"]

    # The caller's question is heard and answered (the answer's audio reaches the page).
    async def answered() -> bool:
        kinds = [e.type for e in await store.events(call_id)]
        return (
            CallEventType.CALLER_TURN in kinds
            and CallEventType.AGENT_TURN in kinds[kinds.index(CallEventType.CALLER_TURN) :]
        )

    async def story() -> str:
        events = [(e.type.value, e.data) for e in await store.events(call_id)]
        return f"{events}\n{await status(page)}\n{page.errors}\n{server.tail()}"

    try:
        await until(answered, 120)
        # Its turn is stored as it is synthesized: the page hears the end of it after that.
        await page.wait_for("window.heard.quietS > 2", within=60)
    except (TimeoutError, BrowserError) as e:
        raise AssertionError(await story()) from e

    await page.evaluate("window.bonmoniqHangUp()")
    assert (await status(page))["state"] == "ended"
    assert await page.evaluate("document.getElementById('state').textContent") == "ended"

    async def final() -> dict[str, Any] | None:
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get(f"/v1/calls/{call_id}", headers=auth(admin))
        assert r.status_code == 200, r.text
        record: dict[str, Any] = r.json()
        return record if CallState(record["state"]).is_final else None

    record = await until(final, 60)
    assert record["state"] == "completed", record
    assert "webrtc" in (record.get("carrier"), record.get("channel")), record

    # The page received the agent's audio, loud enough to hear.
    seen = await status(page)
    assert seen["maxRms"] > 0.05 and seen["soundMs"] > 3000, seen
    assert seen["error"] is None, seen

    # The stored transcript has the question's key words and the agent's answer after it.
    turns = await store.transcript(call_id)
    said = " ".join(t.text for t in turns if t.role == "caller")
    assert {"open", "saturday"} <= words(said), turns
    assert any("nine" in words(t.text) for t in turns if t.role == "agent"), turns

    # The announcement came first: in the call's events, and in what the page heard first.
    events = await store.events(call_id)
    assert order_violations(events) == []
    kinds = [e.type for e in events]
    assert CallEventType.ANNOUNCEMENT_PLAYED in kinds, kinds
    assert kinds.index(CallEventType.ANNOUNCEMENT_PLAYED) < kinds.index(CallEventType.CALLER_TURN)
    assert kinds.index(CallEventType.ANNOUNCEMENT_PLAYED) < kinds.index(CallEventType.AGENT_TURN)
    got = await page.evaluate(HEARD)
    received = np.frombuffer(base64.b64decode(got["pcm"]), dtype=np.int16)
    loud = np.flatnonzero(np.abs(received) > LOUD)
    assert loud.size, "the page received only silence"
    segments, _ = whisper.transcribe(
        soxr.resample(received[loud[0] :].astype(np.float32) / 32768, got["rate"], 16_000),
        language="en",
    )
    # Whisper writes the hour as a word or a digit.
    heard = re.findall(r"[a-z0-9]+", " ".join(s.text for s in segments).lower())
    heard = ["nine" if w == "9" else w for w in heard]
    assert "nine" in heard, " ".join(heard)  # the answer reached the page, after the disclosure
    assert {"ai", "recorded"} & set(heard[: heard.index("nine")]), " ".join(heard)

    assert page.errors == [], page.errors
    await page.close()

    # The token placed its one call: the same link again is refused, and the page says so.
    again = await browser.open(server.url + token["try_url"])
    refused = await failed_call(again)
    assert "invalid_token" in refused or "unauthorized" in refused, refused
    assert token["token"] not in refused
    await again.close()


async def failed_call(page: Page) -> str:
    """The error the page shows for a call the platform refuses."""
    with pytest.raises(BrowserError):
        await page.evaluate("window.bonmoniqCall()")
    seen = await status(page)
    assert seen["state"] == "failed" and seen["callId"] is None, seen
    shown = str(await page.evaluate("document.getElementById('error').textContent"))
    assert shown == seen["error"] and not await page.evaluate(
        "document.getElementById('error').hidden"
    )
    return shown


async def test_a_wrong_token_is_refused_and_the_page_says_so(
    scripted_server: LiveServer, scripted_redis: Redis, browser: Browser
) -> None:
    server = scripted_server
    admin, agent_id = await webrtc_agent(server, scripted_redis, "browser-wrong-token")
    real = (await token_for(server, admin, agent_id))["token"]
    wrong = real[:-4] + ("aaaa" if not real.endswith("aaaa") else "bbbb")
    page = await browser.open(f"{server.url}/try/{agent_id}#token={wrong}")
    shown = await failed_call(page)
    assert "invalid_token" in shown or "unauthorized" in shown, shown
    assert wrong not in shown and wrong not in " ".join(page.errors)
    await page.close()

    async with httpx.AsyncClient(base_url=server.url) as c:
        items = (await c.get("/v1/calls", headers=auth(admin))).json()["items"]
    assert items == []  # a refused offer is not a call
