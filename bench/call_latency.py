"""Per-turn voice-to-voice latency of a simulated Twilio call, against its own components.

The platform runs as `bonmoniq serve` (child process, its own Redis and embedded LLM); the
simulator asks QUESTIONS in one call and measures end of speech -> first agent audio. The
baseline, measured in the same run on the same machine, is the sum of the pipeline's parts
called directly (VAD hangover + Whisper on the same audio + LLM first token + Piper first
audio): what the platform adds on top of the models is the difference.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr

from llm.server import free_port

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What time do you open on Saturday?",
    "Do you sell birthday cakes?",
    "Can I order croissants for tomorrow morning?",
]
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-token"


def _start(var: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    port, rport = free_port(), free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(rport), "--save", "",
         "--appendonly", "no", "--dir", str(var)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BONMONIQ_PORT": str(port),
        "BONMONIQ_PUBLIC_URL": url,
        "BONMONIQ_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
        "BONMONIQ_VAR_DIR": str(var),
        "BONMONIQ_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "BONMONIQ_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }
    log = (var / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--demo"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    for _ in range(600):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, redis, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("platform did not start")


async def _components(lines: list[bytes], llm_url: str | None) -> dict[str, float]:
    """The parts, timed directly: Whisper (16 kHz, language fixed), LLM first token, Piper."""
    from faster_whisper import WhisperModel

    from api.runtime import DEMO_PROMPT
    from models import Role, verify_profile
    from voice.engines import load_voice
    from voice.session import system_prompt

    models = verify_profile("cpu", REPO / "var" / "models")
    whisper = WhisperModel(
        str(models[Role.STT].directory), device="cpu", compute_type="int8", cpu_threads=2
    )
    stt = []
    for pcm in lines:
        audio = soxr.resample(
            np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768, 8000, 16000
        )
        t = time.perf_counter()
        list(whisper.transcribe(audio, language="en")[0])
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
    proc, redis, url = _start(var)
    try:
        sim = TwilioSimulator(url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
        result = await sim.run(list(zip(QUESTIONS, lines, strict=True)))
        llm_url = None
        for line in (var / "serve.log").read_text().splitlines():
            if '"embedded LLM server ready"' in line:
                llm_url = f"http://127.0.0.1:{json.loads(line)['port']}"
        components = await _components(lines, llm_url)
    finally:
        for child in (proc, redis):
            child.terminate()
            child.wait(timeout=30)
        shutil.rmtree(var, ignore_errors=True)
    latencies = [t.latency_s for t in result.turns if t.latency_s is not None]
    vad_hangover = float(os.environ.get("BONMONIQ_VAD_STOP_SECS", "0.4"))
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
    }
