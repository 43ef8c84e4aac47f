"""Whisper's 30 s window against a window trimmed to the utterance: time and word error rate.

Each line of ``bench/utterances.txt`` (50 reference texts) is spoken by the local Piper voice at
8 kHz, passed through G.711 mu-law as a carrier would, resampled to 16 kHz, and transcribed by
the same Whisper model twice: as pipecat's service asks (``WhisperModel.transcribe``: a 30 s
window, beam search of 5: the baseline) and as the platform does (``TrimmedWhisper``: the same
beam search on a window fitted to the utterance). The report gives each one's word error rate
against the reference texts and its median time.
"""

from __future__ import annotations

import audioop  # the carriers' G.711 mu-law
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr

REPO = Path(__file__).resolve().parents[1]
#: Each reference text is spoken this many times (Piper varies its delivery from take to take).
TAKES = 3


_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_NUMBERS = dict(enumerate(_WORDS.split())) | {
    30: "thirty",
    40: "forty",
    50: "fifty",
    100: "hundred",
}


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation, no hyphens (e-mail = email), small numbers as words: the
    spellings Whisper picks either way, applied alike to every system."""
    text = text.lower().replace("-", "")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in text.split()]


def wer(reference: list[str], hypothesis: list[str]) -> tuple[int, int]:
    """Word edit distance and the reference length."""
    d = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hypothesis, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
            prev, d[j] = d[j], cur
    return d[len(hypothesis)], len(reference)


def phone_line(voice: Any, text: str) -> np.ndarray:
    """``text`` as the platform hears it from a caller: 8 kHz mu-law, then 16 kHz float."""
    from carriers.simulation import trim_silence
    from voice.engines import PHONE_RATE, synthesize

    pcm = trim_silence(synthesize(voice, text, PHONE_RATE))
    pcm = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    return soxr.resample(audio, PHONE_RATE, 16000).astype(np.float32)


def run() -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from models import Role, profile_models, verify_model
    from voice.engines import load_voice
    from voice.services import TrimmedWhisper

    refs = [t for t in (REPO / "bench" / "utterances.txt").read_text().splitlines() if t.strip()]
    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))
    stt = verify_model(profile_models("cpu")[Role.STT], REPO / "var" / "models")
    whisper = WhisperModel(str(stt.directory), device="cpu", compute_type="int8", cpu_threads=2)
    cache = REPO / "var" / "bench-audio"
    lines = []
    for i, text in enumerate(refs * TAKES):
        path = cache / f"utterance-{i:03d}.npy"  # spoken once, then the same audio every run
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            np.save(path, phone_line(voice, text))
        lines.append(np.load(path))
    refs = refs * TAKES
    out: dict[str, Any] = {"utterances": len(refs)}
    configs = {
        "default_30s_beam5": whisper,  # what pipecat's WhisperSTTService runs
        "trimmed_beam5": TrimmedWhisper(whisper),  # what the platform runs
    }
    for name, model in configs.items():
        errors = words = 0
        times = []
        for ref, audio in zip(refs, lines, strict=True):
            t = time.perf_counter()
            segments, _ = model.transcribe(audio, language="en")
            text = " ".join(s.text for s in segments)
            times.append(time.perf_counter() - t)
            e, n = wer(normalise(ref), normalise(text))
            errors, words = errors + e, words + n
        median = round(statistics.median(times), 3)
        out[name] = {"wer": round(errors / words, 4), "median_s": median}
    ours, base = out["trimmed_beam5"], out["default_30s_beam5"]
    out["wer_delta_points"] = round(100 * (ours["wer"] - base["wer"]), 2)
    out["speedup"] = round(base["median_s"] / ours["median_s"], 2)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
