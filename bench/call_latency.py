"""Per-turn voice-to-voice latency of a simulated Twilio call, against its own components.

The platform runs as `bonmoniq serve` (child process, its own Redis and embedded LLM); the
simulator asks QUESTIONS in one call and measures end of speech -> first agent audio. The
baseline, measured in the same run on the same machine, is the sum of the pipeline's parts
called directly (VAD hangover + Whisper on the same audio + LLM first token + Piper first
audio): what the platform adds on top of the models is the difference. The platform's CPU
time over the call and its resident memory are of the serve process with its children (the
embedded LLM server among them).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr

from app.settings import Settings
from bench.processes import cpu_s, rss_mb
from bench.voice import ACCOUNT_SID, AUTH_TOKEN, NUMBER, start_ours

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What time do you open on Saturday?",
    "Do you sell birthday cakes?",
    "Can I order croissants for tomorrow morning?",
]


async def _components(lines: list[bytes], llm_url: str | None) -> dict[str, float]:
    """The parts, timed directly: Whisper (16 kHz, language fixed), LLM first token, Piper."""
    from faster_whisper import WhisperModel

    from app.runtime import DEMO_PROMPT
    from models import Role, verify_profile
    from voice.engines import load_voice
    from voice.prompt import system_prompt
    from voice.services import TrimmedWhisper

    models = verify_profile("cpu", REPO / "var" / "models")
    whisper = TrimmedWhisper(  # as the platform runs it: window fitted to the utterance
        WhisperModel(
            str(models[Role.STT].directory), device="cpu", compute_type="int8", cpu_threads=2
        )
    )
    stt = []
    for pcm in lines:
        audio = soxr.resample(
            np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768, 8000, 16000
        )
        t = time.perf_counter()
        whisper.transcribe(audio, language="en")
        stt.append(time.perf_counter() - t)
    voice = load_voice(models[Role.TTS])
    tts = []
    for _ in QUESTIONS:
        t = time.perf_counter()
        next(iter(voice.synthesize("We open at seven in the morning on Saturdays.")))
        tts.append(time.perf_counter() - t)
    first_token = []
    if llm_url:
        from routing import Agent

        prompt = system_prompt(Agent(name="demo", prompt=DEMO_PROMPT))
        async with httpx.AsyncClient(timeout=30) as c:
            for q in QUESTIONS:
                t = time.perf_counter()
                body = {
                    "model": "smollm2-135m-instruct",
                    "stream": True,
                    "max_tokens": 20,
                    "messages": [
                        {"role": "system", "content": prompt},
                        {"role": "user", "content": q},
                    ],
                }
                async with c.stream("POST", llm_url + "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if '"content"' in line:
                            break
                first_token.append(time.perf_counter() - t)
    return {
        "stt_s": statistics.median(stt),
        "llm_first_token_s": statistics.median(first_token) if first_token else 0.0,
        "tts_first_audio_s": statistics.median(tts),
    }


async def run() -> dict[str, Any]:
    """Place one call with three questions; compare with the components' own latency."""
    from carriers.simulation import trim_silence
    from carriers.twilio.simulator import TwilioSimulator
    from models import Role, profile_models, verify_model
    from voice.engines import PHONE_RATE, load_voice, synthesize

    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))
    lines = [trim_silence(synthesize(voice, q, PHONE_RATE)) for q in QUESTIONS]
    var = Path(tempfile.mkdtemp(prefix="bonmoniq-bench-"))
    system = start_ours(var)  # with its own embedded LLM, as `make run` starts it
    try:
        sim = TwilioSimulator(system.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
        cpu0 = cpu_s(*system.pids)
        result = await sim.run(list(zip(QUESTIONS, lines, strict=True)))
        # The platform with its children (the embedded LLM server), not the serve process alone.
        platform_cpu_s, platform_rss = cpu_s(*system.pids) - cpu0, rss_mb(*system.pids)
        llm_url = None
        for line in (var / "serve.log").read_text().splitlines():
            if '"embedded LLM server ready"' in line:
                llm_url = f"http://127.0.0.1:{json.loads(line)['port']}"
        components = await _components(lines, llm_url)
    finally:
        system.stop()
        shutil.rmtree(var, ignore_errors=True)
    latencies = [t.latency_s for t in result.turns if t.latency_s is not None]
    vad_hangover = Settings().call.vad_stop_secs  # what the platform was started with
    baseline = vad_hangover + sum(components.values())
    median = statistics.median(latencies) if latencies else None
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "turns": len(result.turns),
        "answered": len(latencies),
        "latency_s": latencies,
        "median_latency_s": median,
        "baseline_components_s": {k: round(v, 3) for k, v in components.items()}
        | {"vad_stop_s": vad_hangover},
        "baseline_sum_s": round(baseline, 3),
        "platform_overhead_s": round(median - baseline, 3) if median is not None else None,
        "platform_cpu_s": round(platform_cpu_s, 2),
        "platform_rss_mb": round(platform_rss, 1),
    }
