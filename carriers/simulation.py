"""What every carrier simulator shares: the caller's real-time 20 ms clock, timing, recording.

Each carrier's simulator (``carriers/<carrier>/simulator.py``) speaks its own webhooks and hands
a :class:`Wire` (its media message format) to :class:`Conversation`, which plays the caller:
silence while the agent speaks, each utterance in real time, and the time from the end of the
caller's speech to the first agent audio.
"""

from __future__ import annotations

import asyncio
import audioop
import contextlib
import time
import wave
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Self

import numpy as np
import websockets
from aiohttp import web

RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
SILENCE = bytes(FRAME_SAMPLES * 2)  # 20 ms of 16-bit PCM at 8 kHz
#: RMS of 16-bit PCM above which a frame counts as speech.
SPEECH_RMS = 300
#: The gap between two keys a simulated caller presses.
KEY_GAP_S = 0.15
#: Keypad input of a simulated call: keys pressed after the greeting, or per moment: utterance
#: index -> keys pressed after that utterance's answer (-1: after the greeting).
Keys = str | Mapping[int, str]


def keys_at(keys: Keys | None, index: int) -> str:
    """The keys pressed at moment ``index`` (-1: after the greeting)."""
    if not keys:
        return ""
    if isinstance(keys, str):
        return keys if index == -1 else ""
    return keys.get(index, "")


class SimulationError(Exception):
    """The platform did not answer the simulated call as the carrier expects."""

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


@dataclass(frozen=True)
class Heard:
    """What one message from the platform meant to the caller."""

    audio: bytes = b""  # 16-bit PCM, 8 kHz
    clear: bool = False
    reply: str | bytes | None = None  # what the carrier answers at once
    #: What the carrier answers once the audio received before this message has played (a
    #: ``mark`` echo); on ``clear`` the audio is dropped and these are answered at once.
    played_reply: str | bytes | None = None


class Wire(Protocol):
    """A carrier's media message format, from the carrier's side."""

    def encode(self, pcm: bytes) -> str | bytes:
        """20 ms of caller audio (16-bit PCM, 8 kHz) as one message."""
        ...

    def decode(self, raw: str | bytes) -> Heard:
        """One message from the platform."""
        ...

    def stop(self) -> str | bytes | None:
        """The message that ends the stream from the carrier's side, if any."""
        ...

    def key(self, digit: str) -> str | bytes:
        """One key pressed by the caller, as the carrier reports it on the stream."""
        ...


class LoopbackApi:
    """A carrier's REST API, played on a loopback port by its simulator."""

    def __init__(self, port: int) -> None:
        """Serve on ``127.0.0.1:port``."""
        self.port = port
        self._runner: web.AppRunner | None = None

    def add_routes(self, app: web.Application) -> None:
        """The API's endpoints."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def serving(self) -> bool:
        """Whether the API is being served now."""
        return self._runner is not None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Self]:
        """Serve for the block unless already serving (then the outer block closes it)."""
        if self.serving:
            yield self
            return
        async with self:
            yield self


class Conversation:
    """The media half of a simulated call: a real-time 20 ms clock sending and receiving."""

    def __init__(self, ws: websockets.ClientConnection, wire: Wire, result: SimulationResult):
        """Talk over ``ws`` in ``wire``'s format; record into ``result``."""
        self.ws = ws
        self.wire = wire
        self.result = result
        self.last_agent_audio = 0.0
        self.t0 = result.started_at = time.monotonic()
        self._pending: TurnTiming | None = None
        #: When the audio received so far will have played (the carrier plays in real time).
        self.played_until = 0.0
        self._echoes: dict[asyncio.Task[None], str | bytes] = {}

    async def _echo_when_played(self, reply: str | bytes, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(reply)

    async def _cleared(self) -> None:
        """``clear``: playback stops, and pending acknowledgements are answered at once."""
        self.played_until = 0.0
        pending, self._echoes = self._echoes, {}
        for task, reply in pending.items():
            if task.cancel():
                await self.ws.send(reply)

    async def _send_frame(self, pcm: bytes) -> None:
        await self.ws.send(self.wire.encode(pcm))

    async def _receive(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            heard = self.wire.decode(raw)
            if heard.reply is not None:
                await self.ws.send(heard.reply)
            if heard.clear:
                self.result.clears += 1
                await self._cleared()
            if heard.played_reply is not None:
                at = max(now, self.played_until)
                task = asyncio.create_task(self._echo_when_played(heard.played_reply, at))
                self._echoes[task] = heard.played_reply
                task.add_done_callback(lambda t: self._echoes.pop(t, None))
            pcm = heard.audio
            if not pcm:
                continue
            self.played_until = max(now, self.played_until) + len(pcm) / (RATE * 2)
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
                frame = SILENCE
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

    async def _press(self, keys: str, reply_timeout: float, quiet: float) -> None:
        """Press ``keys`` ``KEY_GAP_S`` apart (the line silent meanwhile), then hear the answer."""
        if not keys or self.result.closed_by_platform:
            return
        done = asyncio.Event()

        async def press() -> None:
            for n, digit in enumerate(keys):
                if n:
                    await asyncio.sleep(KEY_GAP_S)
                await self.ws.send(self.wire.key(digit))
            turn = TurnTiming(f"keys:{keys}", time.monotonic())
            self.result.turns.append(turn)
            self._pending = turn
            await self._wait_quiet(done, reply_timeout, quiet, True)

        await asyncio.gather(self._clock([], done, reply_timeout + quiet + 5), press())

    async def converse(
        self,
        utterances: list[tuple[str, bytes]],
        greeting_timeout: float,
        reply_timeout: float,
        quiet: float,
        inject: tuple[str | bytes, ...],
        barge_in_after: float | None = None,
        dtmf: Keys | None = None,
    ) -> None:
        """Wait out the greeting, then say each utterance after the agent's answer.

        ``dtmf``: keys pressed after the greeting (a string) or after given utterances
        (:data:`Keys`), each followed by the wait for the agent's answer.
        """
        receiver = asyncio.create_task(self._receive())
        try:
            done = asyncio.Event()
            await asyncio.gather(
                self._clock([], done), self._wait_quiet(done, greeting_timeout, quiet, False)
            )
            for raw in inject:
                await self.ws.send(raw)
            await self._press(keys_at(dtmf, -1), reply_timeout, quiet)
            for n, (label, pcm) in enumerate(utterances):
                if self.result.closed_by_platform:
                    break
                step = FRAME_SAMPLES * 2
                frames = [pcm[i : i + step].ljust(step, b"\0") for i in range(0, len(pcm), step)]
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
                await self._press(keys_at(dtmf, n), reply_timeout, quiet)
            if not self.result.closed_by_platform:
                if (bye := self.wire.stop()) is not None:
                    await self.ws.send(bye)
                await self.ws.close()
        except websockets.ConnectionClosed:
            self.result.closed_by_platform = True
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await receiver
            for echo in list(self._echoes):
                echo.cancel()
