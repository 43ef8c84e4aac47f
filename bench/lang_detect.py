"""The cost of detecting the caller's language: a fixed-language decode against a detecting one.

Each utterance is heard as the platform hears a caller (8 kHz, G.711 mu-law, resampled to
16 kHz): English lines of ``bench/utterances.txt`` spoken by the local Piper voice, French lines
spoken by espeak-ng's French voice (as the tests' French callers). Each is transcribed by
``TrimmedWhisper`` twice per run: in its language (the baseline: a fixed agent's call) and with
the language detected among the supported ones first (an ``auto`` agent's first utterance).
The report gives, per language, the median and 90th percentile of both, the added time, the
detection step alone (on the window already encoded), and how often detection was right.
"""

from __future__ import annotations

import audioop  # the carriers' G.711 mu-law
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr

REPO = Path(__file__).resolve().parents[1]
#: Each utterance is transcribed this many times per mode.
RUNS = 3
#: English lines taken from ``bench/utterances.txt``.
ENGLISH_LINES = 10
#: espeak-ng's French caller: a lower voice variant and pitch, a gap between words (as
#: ``tests/helpers.CALLER_ESPEAK``).
CALLER = ("-v", "fr+m5", "-s", "165", "-p", "30", "-g", "6")
#: What French callers say (short, common words; none from the phrase tables).
FRENCH = (
    "Bonjour je voudrais un rendez-vous demain.",
    "Bonjour, je voudrais réserver une table pour ce soir.",
    "Bonjour, je voudrais commander un gâteau pour samedi.",
    "Bonjour je voudrais acheter du pain.",
    "Bonjour est-ce que vous êtes ouverts dimanche ?",
    "Quels sont vos horaires le samedi ?",
    "Est-ce que vous livrez à domicile ?",
    "Merci beaucoup, bonne journée.",
)


def _line(pcm8k: bytes) -> np.ndarray:
    """8 kHz PCM as the platform hears it: through mu-law, then 16 kHz float."""
    from voice.engines import PHONE_RATE

    pcm = audioop.ulaw2lin(audioop.lin2ulaw(pcm8k, 2), 2)
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    return soxr.resample(audio, PHONE_RATE, 16000).astype(np.float32)


def espeak(text: str) -> bytes:
    """``text`` said by a French caller of espeak-ng (as the tests' callers), 8 kHz PCM."""
    from voice.engines import PHONE_RATE
    from voice.voices import ESPEAK_RATE

    wav = subprocess.run(
        ["espeak-ng", *CALLER, "--stdout"],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    samples = np.frombuffer(wav[44:], dtype=np.int16).astype(np.float32) / 32768
    phone = soxr.resample(samples, ESPEAK_RATE, PHONE_RATE)
    return (np.clip(phone, -1, 1) * 32767).astype(np.int16).tobytes()


def _p90(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=10)[-1], 3)


def run() -> dict[str, Any]:
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim

    from carriers.simulation import trim_silence
    from models import Role, profile_models, verify_model
    from voice.engines import PHONE_RATE, load_voice, synthesize
    from voice.phrasebook import LANGUAGES
    from voice.services import TrimmedWhisper, window_frames

    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))
    stt = verify_model(profile_models("cpu")[Role.STT], REPO / "var" / "models")
    whisper = WhisperModel(str(stt.directory), device="cpu", compute_type="int8", cpu_threads=2)
    model = TrimmedWhisper(whisper)
    refs = [t for t in (REPO / "bench" / "utterances.txt").read_text().splitlines() if t.strip()]
    lines = {
        "en": [_line(trim_silence(synthesize(voice, t, PHONE_RATE))) for t in refs[:ENGLISH_LINES]],
        "fr": [_line(trim_silence(espeak(t))) for t in FRENCH],
    }
    model.transcribe(lines["en"][0], language="en")  # first use: tokenizers, allocations
    out: dict[str, Any] = {"runs": RUNS, "languages_allowed": sorted(LANGUAGES)}
    for language, audios in lines.items():
        fixed: list[float] = []
        detecting: list[float] = []
        step: list[float] = []  # the detection alone, on the already encoded window
        right = 0
        for _ in range(RUNS):
            for audio in audios:
                features = pad_or_trim(
                    whisper.feature_extractor(audio), window_frames(len(audio) / 16000)
                )
                encoded = whisper.encode(features)
                t = time.perf_counter()
                model.detect(encoded, LANGUAGES)
                step.append(time.perf_counter() - t)
                t = time.perf_counter()
                model.transcribe(audio, language=language)
                fixed.append(time.perf_counter() - t)
                t = time.perf_counter()
                _, found = model.transcribe(audio, detect=LANGUAGES)
                detecting.append(time.perf_counter() - t)
                right += found is not None and found.language == language
        median_fixed = statistics.median(fixed)
        median_detecting = statistics.median(detecting)
        out[language] = {
            "utterances": len(audios),
            "fixed": {"median_s": round(median_fixed, 3), "p90_s": _p90(fixed)},
            "detecting": {"median_s": round(median_detecting, 3), "p90_s": _p90(detecting)},
            "added_median_s": round(median_detecting - median_fixed, 3),
            "detection_step_median_s": round(statistics.median(step), 4),
            "detected_right": round(right / len(detecting), 3),
        }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
