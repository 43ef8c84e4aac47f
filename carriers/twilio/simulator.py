"""A local Twilio: places a call into a running platform exactly as Twilio would.

Signed voice webhook, then the Media Streams WebSocket (signed upgrade, ``connected`` and
``start``, 20 ms mu-law frames in real time, ``stop``). It records what the agent says and
times, per turn, the gap from the end of the caller's speech to the first agent audio.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import contextlib
import json
import secrets
import time
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets

from carriers.twilio.signature import SIGNATURE_HEADER, compute_signature

RATE = 8000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000  # mu-law: one byte a sample
_SILENCE = audioop.lin2ulaw(b"\x00\x00" * FRAME_BYTES, 2)
#: RMS of 16-bit PCM above which a frame counts as speech.
SPEECH_RMS = 300


class SimulationError(Exception):
    """The platform did not answer the simulated call as Twilio expects."""

    code = "simulation_failed"


@dataclass
class TurnTiming:
    """One caller utterance and how long the agent took to start answering it."""

    label: str
    speech_end: float
    first_agent_audio: float | None = None

    @property
    def latency_s(self) -> float | None:
        """Seconds from the end of the caller's speech to the first agent audio."""
        if self.first_agent_audio is None:
            return None
        return round(self.first_agent_audio - self.speech_end, 3)


@dataclass
class SimulationResult:
    """What the simulated caller saw and heard."""

    call_sid: str
    call_id: str
    twiml: str
    turns: list[TurnTiming] = field(default_factory=list)
    agent_audio: bytearray = field(default_factory=bytearray)  # 16-bit PCM, 8 kHz
    first_audio_at: float | None = None
    clears: int = 0
    closed_by_platform: bool = False
    started_at: float = 0.0

    def write_wav(self, path: Path) -> None:
        """Save what the caller heard (8 kHz, 16-bit mono)."""
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(bytes(self.agent_audio))


def pcm16_to_8k(pcm: bytes, rate: int) -> bytes:
    """Resample 16-bit mono PCM to 8 kHz."""
    if rate == RATE:
        return pcm
    import soxr

    samples = np.frombuffer(pcm, dtype=np.int16)
    return soxr.resample(samples, rate, RATE).astype(np.int16).tobytes()


def trim_silence(pcm: bytes) -> bytes:
    """Drop leading and trailing silence so "end of speech" is the last voiced sample."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    voiced = np.flatnonzero(np.abs(samples) > SPEECH_RMS)
    if voiced.size == 0:
        return b""
    return samples[voiced[0] : voiced[-1] + 1].tobytes()


def read_wav(path: Path) -> bytes:
    """A mono 16-bit WAV file as 8 kHz PCM."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise SimulationError(f"{path}: need a mono 16-bit WAV file")
        return pcm16_to_8k(w.readframes(w.getnframes()), w.getframerate())


def _is_speech(pcm: bytes) -> bool:
    return audioop.rms(pcm, 2) > SPEECH_RMS


class TwilioSimulator:
    """Plays Twilio's part of one call against ``public_url``."""

    def __init__(
        self,
        public_url: str,
        account_sid: str,
        auth_token: str,
        *,
        to: str,
        from_: str = "+15555550123",
        base_url: str | None = None,
    ) -> None:
        """Call ``to`` at the platform whose public address is ``public_url``.

        ``base_url`` is where requests really go when it differs from the public address
        (a platform behind a reverse proxy); signatures always cover the public URL.
        """
        self.public_url = public_url.rstrip("/")
        self.base_url = (base_url or public_url).rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.to = to
        self.from_ = from_
        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)

    def voice_params(self) -> dict[str, str]:
        """The form Twilio posts to the voice webhook for an incoming call."""
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_,
            "To": self.to,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    async def post_signed(self, path: str, params: dict[str, str]) -> httpx.Response:
        """POST a form to ``path`` signed for the public URL, as Twilio does."""
        sig = compute_signature(self.public_url + path, list(params.items()), self.auth_token)
        async with httpx.AsyncClient(timeout=15) as client:
            return await client.post(
                self.base_url + path, data=params, headers={SIGNATURE_HEADER: sig}
            )

    async def status(self, status: str, sequence: int) -> httpx.Response:
        """Send a call status callback."""
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "CallStatus": status,
            "SequenceNumber": str(sequence),
        }
        return await self.post_signed("/webhooks/twilio/status", params)

    async def run(
        self,
        utterances: list[tuple[str, bytes]],
        *,
        greeting_timeout: float = 40.0,
        reply_timeout: float = 40.0,
        quiet_after_reply: float = 1.5,
        inject: tuple[str | bytes, ...] = (),
        barge_in_after: float | None = None,
    ) -> SimulationResult:
        """Place the call and say each ``(label, pcm8k)`` after the agent has finished talking.

        ``inject`` is sent raw once the greeting is over (tests use it for malformed messages).
        With ``barge_in_after``, each line but the last is followed by the next one that many
        seconds after the agent starts answering: the caller talks over the agent.
        """
        r = await self.post_signed("/webhooks/twilio/voice", self.voice_params())
        if r.status_code != 200:
            raise SimulationError(f"voice webhook answered {r.status_code}: {r.text[:200]}")
        stream = ET.fromstring(r.text).find("./Connect/Stream")
        if stream is None:
            raise SimulationError(f"the platform did not connect a stream: {r.text[:200]}")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        result = SimulationResult(self.call_sid, params.get("call_id", ""), r.text)
        url = stream.get("url", "")
        ws_url = url.replace(
            self.public_url.replace("http", "ws", 1), self.base_url.replace("http", "ws", 1), 1
        )
        headers = {SIGNATURE_HEADER: compute_signature(url, [], self.auth_token)}
        async with websockets.connect(ws_url, additional_headers=headers, max_size=2**22) as ws:
            result.started_at = time.monotonic()
            await ws.send(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            )
            await ws.send(json.dumps(self._start(params)))
            await _Call(ws, self.stream_sid, result).converse(
                utterances,
                greeting_timeout,
                reply_timeout,
                quiet_after_reply,
                inject,
                barge_in_after,
            )
        return result

    def _start(self, params: dict[str, str]) -> dict[str, object]:
        return {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }


class _Call:
    """The media half of a simulated call: a real-time 20 ms clock sending and receiving."""

    def __init__(self, ws: websockets.ClientConnection, stream_sid: str, result: SimulationResult):
        self.ws = ws
        self.stream_sid = stream_sid
        self.result = result
        self.seq = 2
        self.chunk = 0
        self.last_agent_audio = 0.0
        self.t0 = time.monotonic()
        self._pending: TurnTiming | None = None

    async def _send_frame(self, mulaw: bytes) -> None:
        self.seq += 1
        self.chunk += 1
        msg = {
            "event": "media",
            "sequenceNumber": str(self.seq),
            "media": {
                "track": "inbound",
                "chunk": str(self.chunk),
                "timestamp": str(self.chunk * FRAME_MS),
                "payload": base64.b64encode(mulaw).decode(),
            },
            "streamSid": self.stream_sid,
        }
        await self.ws.send(json.dumps(msg))

    async def _receive(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            msg = json.loads(raw)
            event = msg.get("event")
            if event == "media":
                pcm = audioop.ulaw2lin(base64.b64decode(msg["media"]["payload"]), 2)
                # Keep the recording on the call's timeline: a pause on the line is silence.
                due = int((now - self.t0) * RATE) * 2 - len(pcm)
                if due > len(self.result.agent_audio) + RATE // 5:
                    self.result.agent_audio.extend(bytes(due - len(self.result.agent_audio)))
                self.result.agent_audio.extend(pcm)
                if _is_speech(pcm):
                    self.last_agent_audio = now
                    if self.result.first_audio_at is None:
                        self.result.first_audio_at = now
                    if self._pending and self._pending.first_agent_audio is None:
                        self._pending.first_agent_audio = now
            elif event == "clear":
                self.result.clears += 1
            elif event == "mark":
                # Twilio echoes a mark once the audio before it has played.
                await self.ws.send(
                    json.dumps(
                        {"event": "mark", "streamSid": self.stream_sid, "mark": msg.get("mark", {})}
                    )
                )
        self.result.closed_by_platform = True

    async def _clock(
        self, frames: list[bytes], until: asyncio.Event | None = None, limit: float = 0
    ) -> None:
        """Send ``frames`` then silence, one every 20 ms of wall time, until ``until``."""
        start = time.monotonic()
        n = 0
        while True:
            if frames:
                frame = frames.pop(0)
            elif until is None or until.is_set() or (limit and time.monotonic() - start > limit):
                return
            else:
                frame = _SILENCE
            await self._send_frame(frame)
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_MS / 1000 - time.monotonic()))

    async def _wait_quiet(
        self, done: asyncio.Event, limit_s: float, quiet: float, need_audio: bool
    ) -> None:
        start = time.monotonic()
        while time.monotonic() - start < limit_s and not self.result.closed_by_platform:
            heard = self.last_agent_audio > start if need_audio else self.last_agent_audio > 0
            if heard and time.monotonic() - self.last_agent_audio > quiet:
                break
            await asyncio.sleep(0.05)
        done.set()

    async def _wait_talking(
        self, done: asyncio.Event, turn: TurnTiming, limit_s: float, delay: float
    ) -> None:
        """Until the agent has been answering ``turn`` for ``delay`` seconds (to talk over it)."""
        start = time.monotonic()
        while time.monotonic() - start < limit_s and not self.result.closed_by_platform:
            heard = turn.first_agent_audio
            if heard is not None and time.monotonic() - heard >= delay:
                break
            await asyncio.sleep(0.02)
        done.set()

    async def converse(
        self,
        utterances: list[tuple[str, bytes]],
        greeting_timeout: float,
        reply_timeout: float,
        quiet: float,
        inject: tuple[str | bytes, ...],
        barge_in_after: float | None = None,
    ) -> None:
        receiver = asyncio.create_task(self._receive())
        try:
            done = asyncio.Event()
            await asyncio.gather(
                self._clock([], done), self._wait_quiet(done, greeting_timeout, quiet, False)
            )
            for raw in inject:
                await self.ws.send(raw)
            for n, (label, pcm) in enumerate(utterances):
                if self.result.closed_by_platform:
                    break
                frames = [
                    audioop.lin2ulaw(pcm[i : i + FRAME_BYTES * 2].ljust(FRAME_BYTES * 2, b"\0"), 2)
                    for i in range(0, len(pcm), FRAME_BYTES * 2)
                ]
                await self._clock(frames)
                turn = TurnTiming(label, time.monotonic())
                self.result.turns.append(turn)
                self._pending = turn
                done = asyncio.Event()
                interrupt = barge_in_after is not None and n < len(utterances) - 1
                waiter = (
                    self._wait_talking(done, turn, reply_timeout, barge_in_after or 0.0)
                    if interrupt
                    else self._wait_quiet(done, reply_timeout, quiet, True)
                )
                await asyncio.gather(self._clock([], done, reply_timeout + quiet), waiter)
            if not self.result.closed_by_platform:
                await self.ws.send(
                    json.dumps(
                        {
                            "event": "stop",
                            "sequenceNumber": str(self.seq + 1),
                            "stop": {"accountSid": "", "callSid": ""},
                            "streamSid": self.stream_sid,
                        }
                    )
                )
                await self.ws.close()
        except websockets.ConnectionClosed:
            self.result.closed_by_platform = True
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await receiver
