"""Calls held within the latency rule by 1, 2 and 3 platform processes on this machine.

Each configuration is a cluster as a deployment runs it, on loopback: N ``bonmoniq serve``
processes in cluster mode behind HAProxy (round robin, health-checked on ``/readyz``), one
Redis, moto's S3 server, and ONE embedded LLM server that all N share (``bonmoniq llm-server``,
started fresh per configuration). The Twilio simulator places calls through HAProxy, each call
with QUESTIONS_PER_CALL spoken questions; levels of 1, 2, 3... calls started together, until a
level breaks the latency rule of ``bench/voice.py`` (its p95 not under twice the single-call
p50 of the same configuration, or a turn unanswered). CPU and resident memory are summed over
every process of the platform: the serve processes, their children and the LLM server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.encryption import machine
from bench.processes import cpu_s, rss_mb
from bench.voice import ACCOUNT_SID, AUTH_TOKEN, finite, one_call, pct, settle
from llm.server import free_port

REPO = Path(__file__).resolve().parents[1]
PROCESSES = tuple(
    int(x) for x in os.environ.get("BONMONIQ_BENCH_CLUSTER_PROCESSES", "1,2,3").split(",")
)
#: The most calls a level starts together (the sweep stops earlier at the first level broken).
MAX_LEVEL = int(os.environ.get("BONMONIQ_BENCH_CLUSTER_MAX_LEVEL", "6"))
QUESTIONS_PER_CALL = 3
#: Turns per level at least (rounds of ``level`` calls until then): short runs, not a p95 of 20.
MIN_TURNS = int(os.environ.get("BONMONIQ_BENCH_CLUSTER_TURNS", "6"))
BUCKET = "bench"
#: The most seconds a level waits for the machine to go quiet after the level before.
SETTLE_S = 10.0

HAPROXY_CFG = """global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend public
    bind 127.0.0.1:{port}
    default_backend platform
backend platform
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500 fall 1 rise 1
{servers}
"""


@dataclass
class Cluster:
    """A running configuration: the balancer's URL and the platform's processes."""

    url: str
    serve: list[subprocess.Popen[bytes]]
    llm_pids: list[int]

    @property
    def pids(self) -> tuple[int, ...]:
        """The platform: the serve processes (children counted with them) and the LLM server."""
        return (*(p.pid for p in self.serve), *self.llm_pids)


def _wait_http(url: str, limit_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} never answered 200")


def _spawn(cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, **kw)


@contextlib.contextmanager
def cluster(var: Path, n: int) -> Iterator[Cluster]:
    """``n`` platform processes behind HAProxy, sharing Redis, S3 (moto) and one LLM server."""
    procs: list[subprocess.Popen[bytes]] = []
    rport, s3port, public, lport = free_port(), free_port(), free_port(), free_port()
    redis = [shutil.which("redis-server") or "redis-server", "--port", str(rport)]
    redis += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(var)]
    with contextlib.ExitStack() as stack:
        stack.callback(_stop_all, procs)
        procs.append(subprocess.Popen(redis, stdout=subprocess.DEVNULL))
        moto = str(Path(sys.executable).parent / "moto_server")
        procs.append(_spawn([moto, "-H", "127.0.0.1", "-p", str(s3port)], var / "moto.log"))
        endpoint = f"http://127.0.0.1:{s3port}"
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                httpx.put(f"{endpoint}/{BUCKET}", timeout=2)  # create the bucket
                break
            time.sleep(0.1)
        # One LLM server for every process: `bonmoniq llm-server`, as a deployment runs it.
        llm_cmd = [sys.executable, "-m", "app.cli", "llm-server", "--port", str(lport)]
        llm_env = {**os.environ, "BONMONIQ_VAR_DIR": str(var / "llm")}
        llm = _spawn(llm_cmd, var / "llm.log", cwd=REPO, env=llm_env)
        procs.append(llm)
        _wait_http(f"http://127.0.0.1:{lport}/v1/models", 180, llm)
        env = {
            **os.environ,
            "BONMONIQ_MODE": "cluster",
            "BONMONIQ_PUBLIC_URL": f"http://127.0.0.1:{public}",
            "BONMONIQ_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "BONMONIQ_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "BONMONIQ_STORAGE": "s3",
            "BONMONIQ_S3_ENDPOINT": endpoint,
            "BONMONIQ_S3_BUCKET": BUCKET,
            "BONMONIQ_S3_ACCESS_KEY": "bench",
            "BONMONIQ_S3_SECRET_KEY": "bench-secret",
            "BONMONIQ_LLM_URL": f"http://127.0.0.1:{lport}/v1",
            "BONMONIQ_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "BONMONIQ_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "BONMONIQ_MAX_CALLS": "100",  # the latency rule decides, not the cap
            "BONMONIQ_LOG_LEVEL": "INFO",
        }
        ports = [free_port() for _ in range(n)]
        serve = []
        for i, port in enumerate(ports):  # all at once: their start-ups overlap
            own = {
                "BONMONIQ_PORT": str(port),
                "BONMONIQ_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                "BONMONIQ_VAR_DIR": str(var / f"node{i}"),
                "BONMONIQ_NODE_ID": f"bench{i}",
            }
            cmd = [sys.executable, "-m", "app.cli", "serve", "--demo"]
            serve.append(_spawn(cmd, var / f"serve{i}.log", cwd=REPO, env=env | own))
        procs += serve
        for port, proc in zip(ports, serve, strict=True):
            _wait_http(f"http://127.0.0.1:{port}/readyz", 300, proc)
        servers = "\n".join(f"    server n{i} 127.0.0.1:{p} check" for i, p in enumerate(ports))
        (var / "haproxy.cfg").write_text(HAPROXY_CFG.format(port=public, servers=servers))
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        procs.append(_spawn([haproxy, "-f", str(var / "haproxy.cfg"), "-db"], var / "ha.log"))
        _wait_http(f"http://127.0.0.1:{public}/readyz", 30)
        yield Cluster(f"http://127.0.0.1:{public}", serve, [llm.pid])


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # the balancer and the platform first, Redis last
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _System:  # what bench.voice.one_call needs of a system
    url: str


async def level(c: Cluster, lines: list[tuple[str, bytes]], calls: int) -> dict[str, Any]:
    """Rounds of ``calls`` calls started together until MIN_TURNS turns: latency, CPU, memory."""
    # N idle processes never let this machine go quite quiet: wait a little, not a minute.
    await settle(SETTLE_S)
    idle = rss_mb(*c.pids)
    cpu0, t0, peak = cpu_s(*c.pids), time.monotonic(), idle
    lat: list[float] = []
    first = 0
    while len(lat) < MIN_TURNS:
        tasks = []
        for k in range(calls):
            n = first + k * QUESTIONS_PER_CALL
            chunk = [lines[(n + q) % len(lines)] for q in range(QUESTIONS_PER_CALL)]
            tasks.append(asyncio.create_task(one_call(_System(c.url), chunk)))  # type: ignore[arg-type]
        first += calls * QUESTIONS_PER_CALL
        while not all(t.done() for t in tasks):
            peak = max(peak, rss_mb(*c.pids))
            await asyncio.sleep(0.25)
        lat += [x for t in tasks for x in t.result()[0]]
    used = (cpu_s(*c.pids) - cpu0) / (time.monotonic() - t0)
    return {
        "turns": len(lat),
        "unanswered": sum(1 for x in lat if x == float("inf")),
        "p50_s": finite(statistics.median(lat)),
        "p95_s": finite(pct(lat, 0.95)),
        "cpu_cores": round(used, 2),
        "rss_idle_mb": round(idle, 1),
        "rss_peak_mb": round(peak, 1),
    }


async def configuration(var: Path, n: int, lines: list[tuple[str, bytes]]) -> Any:
    """One configuration's sweep: level 1 sets the rule, then 2, 3... until one breaks it."""
    with cluster(var, n) as c:
        await one_call(_System(c.url), lines[:QUESTIONS_PER_CALL])  # type: ignore[arg-type]
        levels = {"1": await level(c, lines, 1)}
        single = levels["1"]["p50_s"]
        held = 1 if single is not None and not levels["1"]["unanswered"] else 0
        for calls in range(2, MAX_LEVEL + 1):
            if held < calls - 1 or single is None:
                break
            r = levels[str(calls)] = await level(c, lines, calls)
            if r["p95_s"] is not None and r["p95_s"] < 2 * single and not r["unanswered"]:
                held = calls
        return {"calls_held": held, "single_call_p50_s": single, "levels": levels}


async def run() -> dict[str, Any]:
    from carriers.simulation import trim_silence
    from models import Role, profile_models, verify_model
    from voice.engines import PHONE_RATE, load_voice, synthesize

    texts = [t for t in (REPO / "bench" / "utterances.txt").read_text().splitlines() if t][:12]
    models = REPO / "var" / "models"
    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], models))
    lines = [(t, trim_silence(synthesize(voice, t, PHONE_RATE))) for t in texts]
    report: dict[str, Any] = {"machine": machine(), "questions_per_call": QUESTIONS_PER_CALL}
    for n in PROCESSES:
        var = Path(tempfile.mkdtemp(prefix=f"bonmoniq-bench-cluster{n}-"))
        try:
            report[f"{n}_processes"] = await configuration(var, n, lines)
        finally:
            shutil.rmtree(var, ignore_errors=True)
    report["calls_held"] = {n: report[f"{n}_processes"]["calls_held"] for n in PROCESSES}
    return report


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(run()), indent=2))
