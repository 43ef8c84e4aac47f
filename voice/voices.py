"""The voices a process can speak with: Piper voices of the model catalogue and espeak-ng.

A voice is loaded once per process, on first use, and shared by every call that speaks
with it. Piper voices come from the profile's catalogue (verified files); espeak-ng (Debian)
speaks every supported language that has no Piper voice in the profile.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime
import soxr
from piper import PiperVoice, SynthesisConfig

from models import VerifiedModel
from voice.errors import VoiceError
from voice.phrasebook import base_language

log = logging.getLogger(__name__)

#: The rate the pipeline speaks to the carrier at (telephony: 8 kHz).
PHONE_RATE = 8000
PIPER = "piper"
ESPEAK = "espeak-ng"
#: espeak-ng's output rate.
ESPEAK_RATE = 22050
#: Seconds one espeak-ng synthesis may take before it counts as failed.
ESPEAK_TIMEOUT_S = 10.0
#: espeak-ng's settings: its "m5" variant, 150 words a minute, a lower pitch and a short gap
#: between words, which a telephone line's 8 kHz keeps intelligible (its defaults come out
#: of a mu-law line too muffled for Whisper to follow).
ESPEAK_SETTINGS = ("-s", "150", "-p", "30", "-g", "5")
#: espeak-ng's voice per language.
ESPEAK_VOICES: Mapping[str, tuple[str, ...]] = {
    lang: ("-v", f"{voice}+m5", *ESPEAK_SETTINGS)
    for lang, voice in {
        "en": "en-gb", "fr": "fr", "de": "de", "es": "es", "it": "it", "nl": "nl",
        "pt": "pt", "pl": "pl", "sv": "sv", "da": "da", "fi": "fi",
    }.items()
}  # fmt: skip
#: A sentence ends at . ! or ? followed by a space (espeak-ng speaks each one as a chunk).
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class VoiceInfo:
    """An installed voice: its name (the agent's ``voice``), language and engine."""

    name: str
    language: str
    engine: str


class Voice(Protocol):
    """A loaded voice: 16-bit mono PCM at its own rate, one chunk per sentence."""

    info: VoiceInfo
    sample_rate: int

    def chunks(self, text: str) -> Iterator[bytes]:
        """The audio of ``text``, a sentence at a time (blocking: run in a worker thread)."""
        ...


def load_voice(model: VerifiedModel, use_cuda: bool = False) -> PiperVoice:
    """The Piper voice of a verified TTS model."""
    onnx = next(f.path for f in model.files if f.path.name.endswith(".onnx"))
    voice = PiperVoice.load(str(model.directory / onnx.name), use_cuda=use_cuda)
    if not use_cuda:
        # onnxruntime's threads spin between operators by default, taking the cores from the
        # LLM that is still writing the rest of the answer while Piper speaks its beginning
        # (BENCHMARKS.md has the measurement).
        opts = onnxruntime.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        voice.session = onnxruntime.InferenceSession(
            str(model.directory / onnx.name),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
    return voice


def synthesize(
    voice: PiperVoice, text: str, rate: int = PHONE_RATE, config: SynthesisConfig | None = None
) -> bytes:
    """16-bit mono PCM of ``text`` spoken by a Piper ``voice``, resampled to ``rate``.

    ``config`` sets Piper's knobs (its noise makes each synthesis a little different).
    """
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
    return resample(pcm, int(voice.config.sample_rate), rate)


def resample(pcm: bytes, native: int, rate: int) -> bytes:
    """16-bit mono ``pcm`` at ``native`` Hz, at ``rate`` Hz."""
    if rate == native or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    return soxr.resample(samples, native, rate).astype(np.int16).tobytes()


def speak(voice: Voice, text: str, rate: int = PHONE_RATE) -> bytes:
    """16-bit mono PCM of ``text`` spoken by ``voice`` at ``rate`` (blocking)."""
    return resample(b"".join(voice.chunks(text)), voice.sample_rate, rate)


class PiperSpeaker:
    """A Piper voice (ONNX, in the process)."""

    def __init__(self, info: VoiceInfo, piper: PiperVoice) -> None:
        """Speak as ``info`` with the loaded ``piper`` voice."""
        self.info = info
        self.piper = piper
        self.sample_rate = int(piper.config.sample_rate)

    def chunks(self, text: str) -> Iterator[bytes]:
        """Piper's audio of ``text``, a sentence at a time."""
        for chunk in self.piper.synthesize(text):
            yield chunk.audio_int16_bytes


def wav_data(wav: bytes) -> bytes:
    """The samples of espeak-ng's WAV output (its header gives no true length when piped)."""
    at = wav.find(b"data", 12)
    if not wav.startswith(b"RIFF") or at < 0:
        raise VoiceError("espeak-ng wrote no WAV audio")
    data = wav[at + 8 :]
    return data[: len(data) - len(data) % 2]


class EspeakVoice:
    """espeak-ng (Debian) run per sentence; the text goes on its stdin, never its arguments."""

    sample_rate = ESPEAK_RATE

    def __init__(self, info: VoiceInfo, args: tuple[str, ...], binary: str) -> None:
        """Speak as ``info`` with espeak-ng at ``binary`` and ``args`` (voice, rate, pitch)."""
        self.info = info
        self._command = (binary, *args, "--stdout")

    def chunks(self, text: str) -> Iterator[bytes]:
        """espeak-ng's audio of ``text``, a sentence at a time."""
        for sentence in _SENTENCE_END.split(text.strip()):
            if sentence.strip():
                yield self._run(sentence.strip())

    def _run(self, sentence: str) -> bytes:
        try:
            done = subprocess.run(
                self._command,
                input=sentence.encode(),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise VoiceError(f"espeak-ng failed: {type(e).__name__}") from e
        if done.returncode != 0:
            raise VoiceError(f"espeak-ng exited with status {done.returncode}")
        return wav_data(done.stdout)


class Voices:
    """The voices installed in this process, each loaded on first use and then shared.

    ``piper``: the profile's verified Piper voices, their language in the catalogue; the
    first is the default English voice. espeak-ng voices are listed when its binary is
    installed, for every supported language. A language's default voice is its first Piper
    voice, else espeak-ng.
    """

    def __init__(
        self,
        piper: tuple[VerifiedModel, ...],
        use_cuda: bool = False,
        espeak: str | None = None,
        preloaded: Mapping[str, PiperVoice] | None = None,
    ) -> None:
        """Voices from ``piper`` models and espeak-ng at ``espeak`` (default: found on PATH).

        ``preloaded``: Piper voices of ``piper`` already loaded, by name.
        """
        self._models = {m.spec.name: m for m in piper}
        self._use_cuda = use_cuda
        self._espeak = espeak if espeak is not None else shutil.which(ESPEAK)
        infos = [VoiceInfo(m.spec.name, m.spec.language or "en", PIPER) for m in piper]
        if self._espeak:
            infos += [VoiceInfo(f"{ESPEAK}-{lang}", lang, ESPEAK) for lang in ESPEAK_VOICES]
        else:
            log.warning("espeak-ng is not installed: only the Piper voices can speak")
        self._infos = {i.name: i for i in infos}
        self._loaded: dict[str, Voice] = {
            name: PiperSpeaker(self._infos[name], loaded)
            for name, loaded in (preloaded or {}).items()
        }
        self._lock = threading.Lock()
        if not piper:
            raise ValueError("the profile has no Piper voice")
        self.default = piper[0].spec.name

    def names(self) -> list[str]:
        """Every installed voice's name."""
        return sorted(self._infos)

    def info(self, name: str) -> VoiceInfo:
        """What ``name`` is (KeyError when no such voice is installed)."""
        return self._infos[name]

    def of_language(self, language: str) -> list[VoiceInfo]:
        """The voices that speak ``language`` (its base language: fr-CA speaks as fr)."""
        base = base_language(language)
        return [i for i in self._infos.values() if i.language == base]

    def default_for(self, language: str) -> str:
        """The voice a ``language`` gets when its agent names none: Piper first, else espeak-ng.

        A language no installed voice speaks gets the default English voice.
        """
        found = self.of_language(language)
        found.sort(key=lambda i: i.engine != PIPER)
        return found[0].name if found else self.default

    def voice_for(self, agent_voice: str, language: str) -> str:
        """A call in ``language``'s voice: the agent's own if it speaks it, else the default."""
        own = self._infos.get(agent_voice)
        if own is not None and own.language == base_language(language):
            return own.name
        return self.default_for(language)

    def get(self, name: str) -> Voice:
        """The loaded voice ``name``, loaded now if it is its first use (thread-safe)."""
        voice = self._loaded.get(name)
        if voice is not None:
            return voice
        with self._lock:
            voice = self._loaded.get(name)
            if voice is None:
                voice = self._loaded[name] = self._load(self._infos[name])
        return voice

    def _load(self, info: VoiceInfo) -> Voice:
        t0 = time.monotonic()
        voice: Voice
        if info.engine == PIPER:
            voice = PiperSpeaker(info, load_voice(self._models[info.name], self._use_cuda))
        else:
            assert self._espeak is not None
            voice = EspeakVoice(info, ESPEAK_VOICES[info.language], self._espeak)
        log.info(
            "voice loaded",
            extra={"voice": info.name, "seconds": round(time.monotonic() - t0, 2)},
        )
        return voice

    def loaded(self) -> list[str]:
        """The voices loaded in this process so far."""
        return sorted(self._loaded)


def default_voice(profile: str, language: str) -> str:
    """The voice an agent of ``language`` gets in ``profile``, read from the catalogue only.

    As :meth:`Voices.default_for`, without verifying or loading anything (the CLI's rule).
    """
    from models import profile_voices

    specs = profile_voices(profile)
    base = base_language(language)
    for spec in specs:
        if (spec.language or "en") == base:
            return spec.name
    if base in ESPEAK_VOICES and shutil.which(ESPEAK):
        return f"{ESPEAK}-{base}"
    return specs[0].name
