"""End to end over WebRTC with aiortc as the browser: a token, the offer, a call, the record.

The platform (the shared scripted server) answers an aiortc peer connection placed with a
single-use token; the peer sends the caller's question (Piper, 48 kHz, through Opus) after the
announcement and records what the agent sends back. The real speech models hear and speak; the
scripted LLM answers and hangs up. The refusals of the API (tokens, keys, offers) are checked
on the same server.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import httpx
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from redis.asyncio import Redis

from calls.events import CallEventType
from routing import Agent, Directory
from tests.conftest import LiveServer, call_store
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import auth, hear, new_tenant, until
from voice.announcement import announcement_for
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow
RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
QUESTION = "What time do you open on Saturday?"
ANSWER = "We open at nine on Saturday morning."


class PcmTrack(MediaStreamTrack):
    """A microphone that says ``pcm`` (16-bit mono, 48 kHz) in real time, then silence."""

    kind = "audio"

    def __init__(self, pcm: bytes) -> None:
        super().__init__()
        self._pcm = pcm
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._sent / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._pcm[self._sent * 2 : (self._sent + FRAME) * 2]
        chunk += b"\0" * (FRAME * 2 - len(chunk))
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk)
        frame.pts, frame.sample_rate = self._sent, RATE
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += FRAME
        return frame


class Browser:
    """An aiortc peer placing a call: what it sends, and the agent's audio it receives."""

    def __init__(self, pcm: bytes) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(PcmTrack(pcm))
        self.heard: list[np.ndarray] = []  # mono 48 kHz int16, per received frame
        self._reader: asyncio.Task[None] | None = None

        @self.pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            self.heard.append(samples[:, 0].astype(np.int16))

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers: no trickle
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def answer(self, body: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()

    def audio(self) -> np.ndarray:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)


async def token_for(c: httpx.AsyncClient, agent_id: str, key: str) -> str:
    r = await c.post(f"/v1/agents/{agent_id}/webrtc/tokens", json={"ttl_s": 120}, headers=auth(key))
    assert r.status_code == 201, r.text
    assert r.json()["try_url"] == f"/try/{agent_id}#token={r.json()['token']}"
    return str(r.json()["token"])


async def test_a_browser_call_is_announced_heard_answered_and_ended(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    voice: Any,
    whisper: Any,
) -> None:
    server = scripted_server
    tenant, admin = await new_tenant(server, "browser-owner")
    agent = await Directory(scripted_redis).add_agent(
        Agent(
            name="web-desk",
            prompt="You answer the bakery's phone.",
            tenant=tenant,
            recording=True,
            tools=("end_call",),
        )
    )
    # The caller speaks once the announcement has played (speech during it is not taken).
    announcement = announcement_for("", "en", None)
    lead = len(synthesize(voice, announcement, RATE)) / (2 * RATE) + 2.5
    question = synthesize(voice, QUESTION, RATE)
    browser = Browser(b"\0" * int(lead * RATE) * 2 + question)
    scripted_llm.script(lambda _body: Reply.call("end_call", ANSWER))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        token = await token_for(c, agent.agent_id, admin)
        r = await c.post(
            f"/v1/agents/{agent.agent_id}/webrtc",
            json=await browser.offer(),
            headers=auth(token),
        )
        assert r.status_code == 201, r.text
        call_id = r.json()["call_id"]
        await browser.answer(r.json())
        # The agent answers and hangs up (end_call): the platform closes the connection.
        await until(lambda: browser.pc.connectionState in ("closed", "failed"), 120)
        await browser.close()

        async def final() -> str | None:
            got = (await c.get(f"/v1/calls/{call_id}", headers=auth(admin))).json()
            return got["state"] if got["state"] in ("completed", "failed") else None

        assert await until(final, 30) == "completed"
        record = (await c.get(f"/v1/calls/{call_id}", headers=auth(admin))).json()
        assert record["carrier"] == "webrtc"
        # The caller's address is a party of the call: found by a data-subject request.
        r = await c.post(
            "/v1/data-subjects/export", json={"ip_address": "127.0.0.1"}, headers=auth(admin)
        )
        assert r.status_code == 200, r.text
        assert call_id in r.content.decode("latin-1")

    store = call_store(server, scripted_redis)
    turns = await store.transcript(call_id)
    said = " ".join(t.text.lower() for t in turns if t.role == "caller")
    assert "saturday" in said and "open" in said, said
    events = [e.type for e in await store.events(call_id)]
    assert CallEventType.ANNOUNCEMENT_PLAYED in events, events

    # What the browser heard: not silent, and the announcement first.
    audio = browser.audio()
    loud = np.flatnonzero(np.abs(audio) > 1000)
    assert loud.size, "the agent's audio was silent"
    opening = audio[loud[0] : loud[0] + 5 * RATE]
    pcm8k = opening[:: RATE // PHONE_RATE].astype(np.int16).tobytes()
    heard = hear(whisper, pcm8k).lower()
    assert "ai" in heard.replace(".", " ").split() or "record" in heard, heard


async def test_browser_call_refusals(scripted_server: LiveServer, scripted_redis: Redis) -> None:
    server = scripted_server
    tenant, admin = await new_tenant(server, "browser-refusals")
    directory = Directory(scripted_redis)
    agent = await directory.add_agent(Agent(name="desk", prompt="Hi.", tenant=tenant))
    other = await directory.add_agent(Agent(name="other", prompt="Hi.", tenant=tenant))
    offer = {"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"}
    url = f"/v1/agents/{agent.agent_id}/webrtc"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        r = await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin))
        assert r.status_code == 201, r.text
        viewer = r.json()["api_key"]
        # A viewer cannot make tokens, nor place a call with its key.
        r = await c.post(f"{url}/tokens", headers=auth(viewer))
        assert r.status_code == 403
        assert (await c.post(url, json=offer, headers=auth(viewer))).status_code == 403
        # An unknown token, or one for another agent: 401 invalid_token, nothing used up.
        r = await c.post(url, json=offer, headers=auth("wrt_nothing"))
        assert (r.status_code, r.json()["code"]) == (401, "invalid_token")
        token = await token_for(c, other.agent_id, admin)
        r = await c.post(url, json=offer, headers=auth(token))
        assert (r.status_code, r.json()["code"]) == (401, "invalid_token")
        # An offer without audio, or one that cannot be answered: 422 invalid_offer.
        no_audio = {"sdp": "v=0\r\n", "type": "offer"}
        token = await token_for(c, agent.agent_id, admin)
        # A malformed body does not use the token up.
        r = await c.post(url, json={"sdp": "v=0", "type": "answer"}, headers=auth(token))
        assert (r.status_code, r.json()["code"]) == (422, "validation_error")
        r = await c.post(url, json=no_audio, headers=auth(token))
        assert (r.status_code, r.json()["code"]) == (422, "invalid_offer")
        r = await c.post(url, json=offer, headers=auth(admin))
        assert (r.status_code, r.json()["code"]) == (422, "invalid_offer")
        # The token was used by its one offer.
        r = await c.post(url, json=offer, headers=auth(token))
        assert (r.status_code, r.json()["code"]) == (401, "invalid_token")
        # An answer is not an offer; an agent of another tenant is not found; ttl bounded.
        r = await c.post(url, json={"sdp": "v=0", "type": "answer"}, headers=auth(admin))
        assert r.status_code == 422
        _, stranger = await new_tenant(server, "browser-stranger")
        assert (await c.post(url, json=offer, headers=auth(stranger))).status_code == 404
        r = await c.post(f"{url}/tokens", json={"ttl_s": 5}, headers=auth(admin))
        assert r.status_code == 422
        # The test page is served with a strict policy.
        r = await c.get(f"/try/{agent.agent_id}")
        assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
    async with httpx.AsyncClient(base_url=server.url) as c:
        items = (await c.get("/v1/calls", headers=auth(admin))).json()["items"]
    assert items == []  # a refused offer is not a call
