"""Resident memory of a second voice: a process with the speech models and one voice, then more.

A fresh process loads the speech models as ``bonmoniq serve`` does (Whisper, Silero and the
default Piper voice, ``Engines.load``; the LLM server is another process and not counted),
speaks with the default voice, then loads and speaks with espeak-ng's French voice, then with a
second Piper voice (the same model registered under another name: what any Piper voice of that
size costs). Memory is the process's with its children (psutil), after each step; espeak-ng
runs as a child per sentence, so its own peak while speaking is sampled as well.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.processes import rss_mb

REPO = Path(__file__).resolve().parents[1]
ENGLISH = "Thank you for calling. We open at seven tomorrow morning. Goodbye."
FRENCH = "Merci de votre appel. Nous ouvrons demain à sept heures. Au revoir."
#: The second Piper voice's name: the default voice's model, loaded a second time.
AGAIN = "en_US-joe-medium-again"


def _child() -> dict[str, Any]:
    """Load and use the voices one after the other in this process; RSS after each step."""
    from llm.endpoint import LLMEndpoint
    from models import Role, profile_models, verify_model
    from voice.engines import Engines
    from voice.voices import speak

    cache = REPO / "var" / "models"
    models = {role: verify_model(spec, cache) for role, spec in profile_models("cpu").items()}
    tts = models[Role.TTS]
    again = dataclasses.replace(tts, spec=dataclasses.replace(tts.spec, name=AGAIN))
    pid = os.getpid()
    steps: dict[str, float] = {"python": rss_mb(pid)}
    engines = Engines.load(
        models, LLMEndpoint("http://127.0.0.1:9/v1", "none"), voices=(tts, again), cpu_threads=2
    )
    gc.collect()
    steps["speech models, one voice loaded"] = rss_mb(pid)
    voices = engines.voices
    speak(voices.get(tts.spec.name), ENGLISH)
    gc.collect()
    steps["one voice used"] = rss_mb(pid)

    peak = {"mb": 0.0}
    done = threading.Event()

    def sample() -> None:  # espeak-ng's child processes while the French voice speaks
        me = psutil.Process(pid)
        while not done.is_set():
            for p in me.children():
                try:
                    if p.name() == "espeak-ng":
                        peak["mb"] = max(peak["mb"], p.memory_info().rss / 2**20)
                except psutil.Error:
                    continue
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        speak(voices.get("espeak-ng-fr"), FRENCH)
    done.set()
    sampler.join()
    gc.collect()
    steps["+ espeak-ng-fr used"] = rss_mb(pid)
    speak(voices.get(AGAIN), ENGLISH)
    gc.collect()
    steps["+ second Piper voice used"] = rss_mb(pid)
    return {"rss_mb": steps, "espeak_child_peak_mb": peak["mb"], "loaded": voices.loaded()}


def run() -> dict[str, Any]:
    """The memory each voice adds to a process that already has one (a fresh child process)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.voices", "--child"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    rss = measured["rss_mb"]
    one = rss["one voice used"]
    return {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs",
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "espeak_ng_child_peak_mb": round(measured["espeak_child_peak_mb"], 1),
        "added_mb": {
            "espeak-ng-fr": round(rss["+ espeak-ng-fr used"] - one, 1),
            "second Piper voice": round(
                rss["+ second Piper voice used"] - rss["+ espeak-ng-fr used"], 1
            ),
        },
        "loaded": measured["loaded"],
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        print(json.dumps(_child()))
    else:
        print(json.dumps(run(), indent=2))
