"""Voice-to-voice latency and call capacity: the platform against a stock pipecat bot, same run.

Both systems run as processes on this machine, side by side, on the same three models, and are
driven by the same Twilio simulator with the same spoken questions (``bench/utterances.txt``,
spoken once by the local Piper voice). Each system has a fresh LLM server on the same llama.cpp
build, model, context and threads: the platform starts its own (``llm.llama_server``, as ``make
run`` does), the baseline talks to llama-cpp-python's stock server (``llama_cpp.server``), which
the platform's builds on (``BASELINE_LLM``). Per system:

- a concurrency sweep (1, 2, 4, 8 calls at once), each level in rounds of calls started
  together until it has at least ``TURNS`` turns: latency, CPU use and resident memory of the
  system's processes with their children (the LLM server included); capacity is the largest
  level whose p95 stays under twice the single-call p50. Level 1 (one call at a time) gives
  the voice-to-voice latency per turn (the caller's last speech frame sent -> the first agent
  audio frame received) and the time from the call being answered (the media stream started)
  to the first audio. The sweeps are interleaved: each level is measured for one system and
  then the other, once the machine is quiet, so the two are compared over the same minutes of
  the run. Each level records the conditions it ran under: a fixed CPU probe's time, the share
  of CPU time the hypervisor stole, and how late the simulator's own event loop woke;
- for the platform, the stage breakdown from its ``/metrics`` and signed voice webhooks per
  second on one process (``bench/webhooks.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from bench import webhooks
from bench.encryption import machine
from bench.processes import children_running, cpu_s, rss_mb
from llm.server import free_port

REPO = Path(__file__).resolve().parents[1]
#: Turns measured per system and level (at least 20 for the figures BENCHMARKS.md reports).
TURNS = int(os.environ.get("BONMONIQ_BENCH_TURNS", "20"))
QUESTIONS_PER_CALL = 4
LEVELS = tuple(int(x) for x in os.environ.get("BONMONIQ_BENCH_LEVELS", "1,2,4,8").split(","))
ACCOUNT_SID = "AC" + "c" * 32
AUTH_TOKEN = "bench-voice-token"
NUMBER = "+15555550100"
#: The LLM server the baseline talks to: llama-cpp-python's stock server (``llama_cpp.server``),
#: what a pipecat user would run, on the same llama.cpp build, model, context and threads as the
#: platform's own server (``llm.llama_server``, which adds kept prompt states and turns by
#: sentence). ``llm.llama_server`` gives the baseline an instance of the platform's server.
BASELINE_LLM = os.environ.get("BONMONIQ_BENCH_BASELINE_LLM", "llama_cpp.server")


@dataclass
class System:
    """A running system under test."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: ``/metrics`` on the platform's metrics listener (BONMONIQ_METRICS_ADDR).
    metrics_url: str = ""
    #: Processes of the system that are not ``proc``'s descendants (the baseline's LLM server).
    counted: list[int] = field(default_factory=list)

    @property
    def pids(self) -> tuple[int, ...]:
        """Whose CPU and memory are the system's, each with its descendants."""
        return (self.proc.pid, *self.counted)

    def stop(self) -> None:
        for p in (self.proc, *self.others):
            p.terminate()
        for p in (self.proc, *self.others):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait(url: str, proc: subprocess.Popen[bytes], path: str, log: Path) -> None:
    for _ in range(900):
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def start_ours(var: Path) -> System:
    """``bonmoniq serve --demo``, its own Redis and its own embedded LLM, logging at INFO."""
    port, rport, mport = free_port(), free_port(), free_port()
    server = [shutil.which("redis-server") or "redis-server", "--port", str(rport)]
    server += ["--save", "", "--appendonly", "no", "--dir", str(var)]
    redis = subprocess.Popen(server, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BONMONIQ_PORT": str(port),
        "BONMONIQ_PUBLIC_URL": url,
        "BONMONIQ_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
        "BONMONIQ_VAR_DIR": str(var),
        "BONMONIQ_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "BONMONIQ_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "BONMONIQ_LOG_LEVEL": "INFO",
        "BONMONIQ_METRICS_ADDR": f"127.0.0.1:{mport}",
        # Every level is measured, not refused at the cap; stopping the server waits for nothing.
        "BONMONIQ_MAX_CALLS": str(max(LEVELS)),
        "BONMONIQ_DRAIN_GRACE_SECONDS": "0",
    }
    log = var / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--demo"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    _wait(url, proc, "/readyz", log)
    return System("ours", url, proc, [redis], f"http://127.0.0.1:{mport}/metrics")


def start_baseline(var: Path, llm_v1: str) -> System:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = var / "baseline.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline_bot", "--port", str(port), "--llm-url", llm_v1],
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    _wait(url, proc, "/docs", log)
    return System("baseline", url, proc)


def finite(x: float) -> float | None:
    """Rounded seconds, or ``None`` for a turn never answered (JSON has no infinity)."""
    return None if x == float("inf") else round(x, 3)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def one_call(
    system: System, lines: list[tuple[str, bytes]]
) -> tuple[list[float], float | None]:
    from carriers.twilio.simulator import TwilioSimulator

    sim = TwilioSimulator(system.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    result = await sim.run(lines, greeting_timeout=60, reply_timeout=60)
    # A turn the agent never answered (within the simulator's 60 s) counts as infinitely late.
    latencies = [t.latency_s if t.latency_s is not None else float("inf") for t in result.turns]
    announce = (result.first_audio_at - result.started_at) if result.first_audio_at else None
    return latencies, announce


def machine_ticks() -> tuple[int, int, int]:
    """The machine's CPU ticks so far: (busy, stolen by the hypervisor, all), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, steal = fields[3] + fields[4], fields[7]
    return sum(fields) - idle - steal, steal, sum(fields)


async def settle(limit_s: float = 60.0) -> float:
    """Seconds waited until the machine is quiet (under a tenth of a core busy over half a
    second): a level starts only once the work of the level before, either system's, is done."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        busy0, _, all0 = machine_ticks()
        await asyncio.sleep(0.5)
        busy1, _, all1 = machine_ticks()
        if (busy1 - busy0) < 0.1 * max(1, all1 - all0) / (os.cpu_count() or 1):
            break
    return round(time.monotonic() - t0, 1)


#: A fixed piece of CPU work (a few milliseconds), timed once a second in a process of its own.
PROBE = """
import time
while True:
    t0 = time.perf_counter()
    sum(i * i for i in range(100_000))
    print(round(1000 * (time.perf_counter() - t0), 2), flush=True)
    time.sleep(1)
"""


class Probe:
    """The machine's speed while a level runs: ``PROBE``'s times, in milliseconds.

    A shared virtual machine's single-thread speed can change from one second to the next even
    when idle (BENCHMARKS.md), so each level records what it ran under; the probe costs under
    1 % of a core, in its own process so as not to hold the simulator's GIL.
    """

    def __enter__(self) -> Probe:
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE], stdout=self.out)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.out.seek(0)
        self.ms = [float(x) for x in self.out.read().split()]
        self.out.close()


async def _driver_lag(samples: list[float]) -> None:
    """How late the simulator's event loop wakes for a 10 ms sleep, sampled until cancelled."""
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(0.01)
        samples.append(time.monotonic() - t0 - 0.01)


@dataclass
class Sweep:
    """One system's concurrency sweep as it goes (see ``run_level``)."""

    system: System
    idle_mb: float = 0.0
    levels: dict[str, Any] = field(default_factory=dict)
    single: list[float] = field(default_factory=list)  # level 1's latencies: the v2v figures
    announce: list[float] = field(default_factory=list)

    async def warm_up(self, lines: list[tuple[str, bytes]]) -> None:
        """One call, not measured: what the first call allocates once per process (arenas,
        buffers of the first real decode) is not memory per call."""
        await one_call(self.system, lines[:QUESTIONS_PER_CALL])
        self.idle_mb = rss_mb(*self.system.pids)

    async def run_level(self, lines: list[tuple[str, bytes]], level: int) -> None:
        """Rounds of ``level`` calls started together, each call with questions of its own,
        until the level has at least TURNS turns (its p95 is then a percentile, not the slowest
        of a handful): latency, CPU use, resident memory, and the conditions it ran under."""
        settled = await settle()
        pids = self.system.pids
        _, steal0, all0 = machine_ticks()
        cpu0, t0, peak = cpu_s(*pids), time.monotonic(), self.idle_mb
        lag: list[float] = []
        monitor = asyncio.create_task(_driver_lag(lag))
        lat: list[float] = []
        first = 0
        with Probe() as probe, contextlib.ExitStack() as done:
            done.callback(monitor.cancel)
            while len(lat) < TURNS:
                starts = range(first, first + level * QUESTIONS_PER_CALL, QUESTIONS_PER_CALL)
                first = starts.stop
                chunks = [
                    [lines[(n + k) % len(lines)] for k in range(QUESTIONS_PER_CALL)] for n in starts
                ]
                calls = [asyncio.create_task(one_call(self.system, chunk)) for chunk in chunks]
                while not all(c.done() for c in calls):
                    peak = max(peak, rss_mb(*pids))
                    await asyncio.sleep(0.25)
                lat += [x for c in calls for x in c.result()[0]]
                if level == 1:
                    self.announce += [a for c in calls if (a := c.result()[1]) is not None]
        if level == 1:
            self.single = lat
        _, steal1, all1 = machine_ticks()
        used = (cpu_s(*pids) - cpu0) / (time.monotonic() - t0)
        self.levels[str(level)] = {
            "turns": len(lat),
            "unanswered": sum(1 for x in lat if x == float("inf")),
            "p50_s": finite(statistics.median(lat)) if lat else None,
            "p95_s": finite(pct(lat, 0.95)) if lat else None,
            "cpu_cores": round(used, 2),
            "rss_peak_mb": round(peak, 1),
            "rss_per_call_mb": round((peak - self.idle_mb) / level, 1),
            "settled_s": settled,
            "probe_p50_ms": round(statistics.median(probe.ms), 2) if probe.ms else None,
            "probe_max_ms": max(probe.ms, default=None),
            "steal_pct": round(100 * (steal1 - steal0) / max(1, all1 - all0), 1),
            "driver_lag_p99_ms": round(1000 * pct(lag, 0.99), 1) if lag else None,
            "driver_lag_max_ms": round(1000 * max(lag), 1) if lag else None,
        }
        self.idle_mb = min(self.idle_mb, rss_mb(*pids))

    def report(self) -> dict[str, Any]:
        latencies = [x for x in self.single if x != float("inf")] or [float("inf")]
        p50 = statistics.median(latencies)
        return {
            "turns": len(latencies),
            "v2v_p50_s": round(p50, 3),
            "v2v_p95_s": round(pct(latencies, 0.95), 3),
            "v2v_max_s": round(max(latencies), 3),
            "announce_start_s": round(statistics.median(self.announce), 3),
            "concurrency": self.levels,
            "capacity_calls": capacity(self.levels, p50),
            "mem_per_call_mb": per_call_mb(self.levels),
        }


def capacity(levels: dict[str, Any], single_p50: float) -> int:
    best = 0
    for level, r in levels.items():
        if r["p95_s"] is not None and r["p95_s"] < 2 * single_p50 and not r["unanswered"]:
            best = max(best, int(level))
    return best


def per_call_mb(levels: dict[str, Any]) -> float:
    """What each call beyond the first adds to the process's peak, from 1 to the most calls.

    The peak with one call is the reference: it holds the models and the working memory of one
    decode at a time (about 100 MB that the process returns between calls), which more calls
    share instead of multiplying.
    """
    most = max(levels, key=int)
    if most == "1":
        return float(levels["1"]["rss_per_call_mb"])
    grown = levels[most]["rss_peak_mb"] - levels["1"]["rss_peak_mb"]
    return round(grown / (int(most) - 1), 1)


EARLY_WORK = ("bonmoniq_early_transcripts_total", "bonmoniq_speculative_answers_total")
GAVE_WAY = ("bonmoniq_tts_gave_way_total ", "bonmoniq_tts_gave_way_seconds_total ")


async def stages(metrics_url: str) -> dict[str, Any]:
    """Mean seconds per stage over the run, how often early work was used or thrown away, and
    how often (and how long) the rest of an answer waited for work a caller waited for."""
    async with httpx.AsyncClient() as c:
        text = (await c.get(metrics_url)).text
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    outcomes: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("bonmoniq_pipeline_stage_seconds_sum"):
            sums[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("bonmoniq_pipeline_stage_seconds_count"):
            counts[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(EARLY_WORK):
            name = line.split("{")[0].removeprefix("bonmoniq_").removesuffix("_total")
            outcome = line.split('"')[1]
            outcomes[f"{name}_{outcome}"] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(GAVE_WAY):  # the rest of answers waiting for callers' turns
            name, value = line.split()
            outcomes[name.removeprefix("bonmoniq_").removesuffix("_total")] = round(float(value), 3)
    return {k: round(sums[k] / counts[k], 3) for k in sums if counts.get(k)} | outcomes


async def run() -> dict[str, Any]:
    from carriers.simulation import trim_silence
    from llm import EmbeddedLLMServer
    from models import Role, profile_models, verify_model
    from voice.engines import PHONE_RATE, load_voice, synthesize

    names = [n for n in os.environ.get("BONMONIQ_BENCH_SYSTEMS", "baseline,ours").split(",") if n]
    if unknown := sorted(set(names) - {"baseline", "ours"}):
        raise SystemExit(f"BONMONIQ_BENCH_SYSTEMS: unknown {', '.join(unknown)} (baseline, ours)")
    texts = [t for t in (REPO / "bench" / "utterances.txt").read_text().splitlines() if t][:12]
    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))
    lines = [(t, trim_silence(synthesize(voice, t, PHONE_RATE))) for t in texts]
    gguf = verify_model(profile_models("cpu")[Role.LLM], REPO / "var" / "models").files[0].path
    var = Path(tempfile.mkdtemp(prefix="bonmoniq-bench-voice-"))
    report: dict[str, Any] = {"machine": machine(), "questions": len(lines)}
    settings = Settings()  # the baseline's LLM server's threads as the platform's own
    baseline_llm = EmbeddedLLMServer(
        gguf,
        "smollm2-135m-instruct",
        var / "llm-baseline.log",
        settings.cpu_threads,
        generation_threads=settings.llm.generation_threads,
        prompt_states_mb=settings.llm.prompt_states_mb,
        module=BASELINE_LLM,
    )
    report["llm_servers"] = {"ours": "llm.llama_server (its own)", "baseline": BASELINE_LLM}
    report["llm_threads"] = {
        "prompt": baseline_llm.threads,
        "generation": baseline_llm.generation_threads,
    }
    with contextlib.ExitStack() as stack:
        sweeps: dict[str, Sweep] = {}
        for name in names:
            if name == "baseline":
                llm = stack.enter_context(baseline_llm)
                system = start_baseline(var, llm.v1)
                system.counted = children_running(BASELINE_LLM)
            else:  # with its own embedded LLM server, as `make run` starts it
                system = start_ours(var)
            stack.callback(system.stop)
            sweeps[name] = Sweep(system)
            await sweeps[name].warm_up(lines)
        # Level by level, the systems one after the other: both are measured in the same minutes
        # of the run, under the same conditions of this shared machine (each level records its
        # probe and steal). Level 1 (one call at a time) first: its turns are the v2v figures.
        for level in (1, *(n for n in LEVELS if n != 1)):
            for s in sweeps.values():
                await s.run_level(lines, level)
        for name, s in sweeps.items():
            report[name] = s.report()
        if "ours" in sweeps:
            url = sweeps["ours"].system.url
            report["ours"]["stages_s"] = await stages(sweeps["ours"].system.metrics_url)
            report["ours"] |= await webhooks.run(url, ACCOUNT_SID, AUTH_TOKEN, NUMBER)
    report["logs"] = str(keep_logs(var))
    if "ours" not in report or "baseline" not in report:
        return report
    ours, base = report["ours"], report["baseline"]
    report |= {
        "v2v_p50_s": ours["v2v_p50_s"],
        "v2v_p95_s": ours["v2v_p95_s"],
        "v2v_p50_ratio": round(ours["v2v_p50_s"] / base["v2v_p50_s"], 3),
        "announce_start_s": ours["announce_start_s"],
        "announce_start_ratio": round(ours["announce_start_s"] / base["announce_start_s"], 3),
        "capacity_calls": ours["capacity_calls"],
        "capacity_ratio": round(ours["capacity_calls"] / max(1, base["capacity_calls"]), 2),
        "mem_per_call_mb": ours["mem_per_call_mb"],
        "mem_per_call_ratio": round(ours["mem_per_call_mb"] / max(0.1, base["mem_per_call_mb"]), 2),
        "webhooks_per_s": ours["webhooks_per_s"],
    }
    return report


def keep_logs(var: Path) -> Path:
    """The run's logs (platform, baseline, LLM server) to ``var/bench-logs``; the rest deleted."""
    logs = REPO / "var" / "bench-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    for log in var.glob("*.log"):
        shutil.copy(log, logs / log.name)
    if (var / "log" / "llm-server.log").is_file():  # the platform's own LLM server
        shutil.copy(var / "log" / "llm-server.log", logs / "llm.log")
    shutil.rmtree(var, ignore_errors=True)
    return logs


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(run()), indent=2))
