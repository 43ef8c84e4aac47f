"""The SIP audio path: G.711 decoded to 16-bit (ours) against pyVoIP's 8-bit path, by Whisper.

Each line of ``bench/utterances.txt`` is spoken by the local Piper voice at 8 kHz and encoded
as a G.711 payload (mu-law and A-law). It is then decoded two ways:

- ``ours`` (carriers/sip/codec.py): ``ulaw2lin``/``alaw2lin`` with sample width 2: 16-bit.
- ``pyvoip``: pyVoIP 1.6.8's two calls (RTP.py ``ulaw2lin(payload, 1)`` then
  ``bias(..., 1, 128)``: 8-bit unsigned linear), widened back to 16 bits as an application
  feeding a speech model must (``bias -128``, ``lin2lin`` 1 -> 2).

The report gives, per law and path, the signal-to-noise ratio of the decoded audio against
the spoken PCM, and for mu-law (the usual law of PBXs) the word error rate of the platform's
Whisper (``TrimmedWhisper``) on both paths.
"""

from __future__ import annotations

import audioop
import math
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from bench.stt_window import normalise, wer

REPO = Path(__file__).resolve().parents[1]
RATE = 8000


def ours(payload: bytes, law: str) -> bytes:
    """Our decode: straight to 16-bit linear PCM."""
    return audioop.ulaw2lin(payload, 2) if law == "pcmu" else audioop.alaw2lin(payload, 2)


def pyvoip(payload: bytes, law: str) -> bytes:
    """pyVoIP's decode (8-bit unsigned), then widened to 16-bit for a speech model."""
    lin = audioop.ulaw2lin(payload, 1) if law == "pcmu" else audioop.alaw2lin(payload, 1)
    unsigned = audioop.bias(lin, 1, 128)  # what pyVoIP hands the application
    return audioop.lin2lin(audioop.bias(unsigned, 1, -128), 1, 2)


def encode(pcm: bytes, law: str) -> bytes:
    return audioop.lin2ulaw(pcm, 2) if law == "pcmu" else audioop.lin2alaw(pcm, 2)


def snr_db(reference: bytes, decoded: bytes) -> float:
    ref = np.frombuffer(reference, dtype=np.int16).astype(np.float64)
    out = np.frombuffer(decoded, dtype=np.int16).astype(np.float64)
    noise = float(np.sum((ref - out) ** 2))
    return round(10 * math.log10(float(np.sum(ref**2)) / max(noise, 1e-9)), 1)


def spoken(voice: Any, texts: list[str]) -> list[bytes]:
    """Each text as 8 kHz 16-bit PCM, synthesized once and kept under var/bench-audio."""
    from carriers.simulation import trim_silence
    from voice.engines import PHONE_RATE, synthesize

    cache = REPO / "var" / "bench-audio"
    out = []
    for i, text in enumerate(texts):
        path = cache / f"sip-{i:03d}.npy"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            np.save(
                path, np.frombuffer(trim_silence(synthesize(voice, text, PHONE_RATE)), np.int16)
            )
        out.append(np.load(path).tobytes())
    return out


def run() -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from models import Role, profile_models, verify_model
    from voice.engines import load_voice
    from voice.services import TrimmedWhisper

    refs = [t for t in (REPO / "bench" / "utterances.txt").read_text().splitlines() if t.strip()]
    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))
    lines = spoken(voice, refs)
    out: dict[str, Any] = {"utterances": len(refs)}
    paths = {"ours_16bit": ours, "pyvoip_8bit": pyvoip}
    for law in ("pcmu", "pcma"):
        for name, decode in paths.items():
            pcm = b"".join(lines)
            out[f"{law}_{name}_snr_db"] = snr_db(pcm, decode(encode(pcm, law), law))
    stt = verify_model(profile_models("cpu")[Role.STT], REPO / "var" / "models")
    whisper = TrimmedWhisper(
        WhisperModel(str(stt.directory), device="cpu", compute_type="int8", cpu_threads=2)
    )
    for name, decode in paths.items():
        errors = words = 0
        for ref, pcm in zip(refs, lines, strict=True):
            heard = decode(encode(pcm, "pcmu"), "pcmu")
            audio = np.frombuffer(heard, dtype=np.int16).astype(np.float32) / 32768
            segments, _ = whisper.transcribe(soxr.resample(audio, RATE, 16000), language="en")
            e, n = wer(normalise(ref), normalise(" ".join(s.text for s in segments)))
            errors, words = errors + e, words + n
        out[f"pcmu_{name}_wer"] = round(errors / words, 4)
    out["wer_delta_points"] = round(
        100 * (out["pcmu_pyvoip_8bit_wer"] - out["pcmu_ours_16bit_wer"]), 2
    )
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
