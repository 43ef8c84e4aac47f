"""The speech models, loaded once per process and shared by every call."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime
from faster_whisper import WhisperModel

from llm.endpoint import LLMEndpoint
from llm.scheduler import GIVE_WAY_LIMIT_S, UrgencyBoard
from models import Role, VerifiedModel
from voice.metrics import GAVE_WAY, GAVE_WAY_SECONDS
from voice.settings import PHRASE_CACHE_MB
from voice.voices import PHONE_RATE, Voices, load_voice, speak, synthesize

__all__ = ["PHONE_RATE", "Engines", "PhraseCache", "Urgency", "load_voice", "synthesize"]

log = logging.getLogger(__name__)


def silero_model_path() -> Path:
    """Silero VAD's ONNX file, shipped inside pipecat."""
    from importlib import resources

    return Path(str(resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")))


class Urgency:
    """Work a caller is waiting for goes first on the shared CPU.

    When two calls' turns overlap, one call's Whisper decode or the first chunk of its answer
    (the caller hears nothing until it is done) goes before the other call's synthesis of the
    rest of its answer, which is only needed once the audio before it has been played. Urgent
    work runs inside :meth:`urgent`; the rest's synthesis calls
    :meth:`give_way` before each chunk and starts once the urgent work running at that moment
    has finished (work that starts later does not hold it up again). With a ``board``, the
    embedded LLM server sees how many urgent jobs run, and the rest of its answers waits too
    (``llm.scheduler.UrgencyBoard``).
    """

    def __init__(self, board: UrgencyBoard | None = None) -> None:
        """No urgent work running; its count shown on ``board``, if any."""
        self._changed = threading.Condition()
        self._running: set[int] = set()
        self._next = 0
        self._board = board
        if board is not None:
            board.set(0)

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Mark the work inside as urgent (a caller waits for it)."""
        with self._changed:
            job, self._next = self._next, self._next + 1
            self._running.add(job)
            self._show()
        try:
            yield
        finally:
            with self._changed:
                self._running.discard(job)
                self._show()
                self._changed.notify_all()

    def _show(self) -> None:
        if self._board is not None:
            self._board.set(len(self._running))

    def give_way(self, limit_s: float = GIVE_WAY_LIMIT_S) -> float:
        """Block until the urgent work running now has finished (at most ``limit_s``).

        Returns the seconds waited (0 when nothing urgent was running). Blocking: call it in
        the worker thread about to do the work that gives way.
        """
        with self._changed:
            ahead = set(self._running)
            if not ahead:
                return 0.0
            t0 = time.monotonic()
            self._changed.wait_for(lambda: not ahead & self._running, timeout=limit_s)
        waited = time.monotonic() - t0
        GAVE_WAY.inc()
        GAVE_WAY_SECONDS.inc(waited)
        return waited

    @property
    def running(self) -> int:
        """How many urgent jobs are running now."""
        with self._changed:
            return len(self._running)


#: Default budget of the phrase cache: about 35 minutes of 8 kHz speech, a few hundred
#: agents' announcements and greetings.
PHRASE_CACHE_BYTES = PHRASE_CACHE_MB * 1024 * 1024


class PhraseCache:
    """Synthesized fixed phrases within a byte budget, the least recently used dropped first.

    Any agent create or update adds phrases; the budget bounds what they can take of the
    process's memory. A phrase larger than the whole budget is not kept. Thread-safe.
    """

    def __init__(self, max_bytes: int = PHRASE_CACHE_BYTES) -> None:
        """Keep at most ``max_bytes`` of audio (0: keep nothing)."""
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int]) -> bytes | None:
        """The audio of ``key`` (marked as just used), or ``None``."""
        with self._lock:
            pcm = self._items.get(key)
            if pcm is not None:
                self._items.move_to_end(key)
            return pcm

    def put(self, key: tuple[str, str, int], pcm: bytes) -> None:
        """Keep ``pcm`` under ``key``, dropping the least recently used to stay in budget."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            if len(pcm) > self.max_bytes:
                return
            self._items[key] = pcm
            self._bytes += len(pcm)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    @property
    def bytes(self) -> int:
        """Bytes of audio kept now."""
        with self._lock:
            return self._bytes

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is kept (does not count as a use)."""
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        """How many phrases are kept."""
        with self._lock:
            return len(self._items)


@dataclass
class Engines:
    """Whisper, the voices and Silero plus the LLM endpoint, shared by all calls.

    CTranslate2 and onnxruntime sessions are safe to use from several threads at once; each
    call keeps its own VAD state and LLM context. Cached phrases are kept at the phone's rate
    (8 kHz), so that replaying them costs no resampling.
    """

    whisper: WhisperModel
    voices: Voices
    silero: onnxruntime.InferenceSession
    llm: LLMEndpoint
    #: Synthesized fixed phrases, within a byte budget (least recently used dropped first).
    phrases: PhraseCache = field(default_factory=PhraseCache)
    _pending: dict[tuple[str, str, int], asyncio.Future[bytes]] = field(default_factory=dict)
    #: The models that have run once since loading (see :meth:`warm_up`).
    warmed: set[str] = field(default_factory=set)
    #: Which work on these models goes first (a Whisper decode before the rest of an answer).
    urgency: Urgency = field(default_factory=Urgency)

    @classmethod
    def load(
        cls,
        models: dict[Role, VerifiedModel],
        llm: LLMEndpoint,
        voices: tuple[VerifiedModel, ...] = (),
        cpu_threads: int = 2,
        device: str = "cpu",
        board: UrgencyBoard | None = None,
        phrase_cache_bytes: int = PHRASE_CACHE_BYTES,
    ) -> Engines:
        """Load the verified STT model, the default voice and the VAD (``device``: cpu or cuda).

        ``voices``: the profile's verified Piper voices (default: the TTS model alone), each
        loaded when a call first needs it;
        ``board``: where the embedded LLM server reads how much urgent work runs;
        ``phrase_cache_bytes``: the budget of the fixed phrases' audio.
        """
        t0 = time.monotonic()
        stt, tts = models[Role.STT], models[Role.TTS]
        whisper = WhisperModel(
            str(stt.directory),
            device=device,
            compute_type="float16" if device == "cuda" else "int8",
            cpu_threads=cpu_threads,
        )
        installed = Voices(voices or (tts,), use_cuda=device == "cuda")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        silero = onnxruntime.InferenceSession(
            str(silero_model_path()), providers=["CPUExecutionProvider"], sess_options=opts
        )
        engines = cls(
            whisper,
            installed,
            silero,
            llm,
            urgency=Urgency(board),
            phrases=PhraseCache(phrase_cache_bytes),
        )
        engines.warm_up()
        log.info("speech models loaded", extra={"seconds": round(time.monotonic() - t0, 2)})
        return engines

    def warm_up(self) -> None:
        """Run each model once, so the first call pays no lazy initialisation."""
        segments, _ = self.whisper.transcribe(
            np.zeros(16000, dtype=np.float32),
            language="en",
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            max_new_tokens=1,
        )
        list(segments)
        self.warmed.add("stt")
        if self.synthesize("Hello."):
            self.warmed.add("tts")
        if self.silero.get_inputs():
            self.warmed.add("vad")

    def missing(self) -> list[str]:
        """Models not ready to serve a call (empty when all are)."""
        return sorted({"stt", "tts", "vad"} - self.warmed)

    @property
    def voice_name(self) -> str:
        """The default voice (English): what speaks when no voice is named."""
        return self.voices.default

    def synthesize(self, text: str, rate: int = PHONE_RATE, voice: str | None = None) -> bytes:
        """16-bit mono PCM of ``text`` by ``voice`` at ``rate`` (blocking: run in a thread)."""
        return speak(self.voices.get(voice or self.voices.default), text, rate)

    def cached(self, text: str, rate: int = PHONE_RATE, voice: str | None = None) -> bytes | None:
        """The cached audio of a fixed phrase, if it was synthesized before and is still kept."""
        return self.phrases.get((voice or self.voices.default, text, rate))

    async def phrase(self, text: str, rate: int = PHONE_RATE, voice: str | None = None) -> bytes:
        """Audio of a fixed phrase (announcement, greeting, farewell) in ``voice``, cached.

        Concurrent requests for a phrase being synthesized wait for that one synthesis; a phrase
        dropped from the cache is synthesized again when it is next needed.
        """
        key = (voice or self.voices.default, text, rate)
        hit = self.phrases.get(key)
        if hit is not None:
            return hit
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self.synthesize, text, rate, key[0]))
            self._pending[key] = pending
        try:
            pcm = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._pending.pop(key, None)
        self.phrases.put(key, pcm)
        return pcm
