"""A cluster on loopback: Redis behind Sentinel, moto's S3 server, one embedded LLM server
(``bonmoniq llm-server``), N ``bonmoniq serve`` processes in cluster mode and HAProxy in front.

Every part is a real process on a free loopback port under one temporary directory; the
platform processes start together and are waited for together. Each process's public URL is
HAProxy's, so a carrier's webhook and its media stream may land on any process.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from bench.cluster import HAPROXY_CFG
from llm.server import free_port
from tests import privacy
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    MASTER_KEY,
    OPERATOR_TOKEN,
    REPO,
    SINCH_APP_KEY,
    SINCH_APP_SECRET,
    TELNYX_API_KEY,
    TELNYX_PUBLIC_KEY,
)
from tests.sentinel import SentinelCluster

BUCKET = "bonmoniq-cluster"
S3_KEY, S3_SECRET = "cluster-key", "cluster-secret"
#: Node liveness in tests: a lost process's calls end within LEASE_S + HEARTBEAT_S.
HEARTBEAT_S, LEASE_S = 0.5, 3.0
#: How long a freshly started platform process may take to answer ``/readyz`` on 2 busy cores.
READY_S = 240.0


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Node:
    """One ``bonmoniq serve`` process of the cluster, on fixed ports (a restart reuses them)."""

    name: str
    var: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The process's own HTTP address (not the balancer's)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Its ``/metrics`` on the metrics listener."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log(self) -> Path:
        return self.var / "serve.log"

    def start(self) -> None:
        """Start the process; :meth:`wait_ready` waits for it."""
        self.var.mkdir(parents=True, exist_ok=True)
        privacy.LOGS.append(self.log)
        env = {
            **self.env,
            "BONMONIQ_PORT": str(self.port),
            "BONMONIQ_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "BONMONIQ_VAR_DIR": str(self.var),
            "BONMONIQ_NODE_ID": self.name,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=out,
            )

    def ready(self) -> bool:
        """``/readyz`` answers 200."""
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            if self.ready():
                return
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not ready: {self.tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The end of its log, for an assertion's message."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    """The running cluster: its parts, and clients on them."""

    root: Path
    sentinels: SentinelCluster
    nodes: list[Node]
    url: str  # HAProxy's: the public URL of every process
    s3_endpoint: str
    llm_url: str
    telnyx_api_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def redis(self) -> Redis:
        """A client on the current Redis master, through the Sentinels (it follows a failover)."""
        return Sentinel(self.sentinels.sentinel_addrs, socket_timeout=2).master_for(
            self.sentinels.master_name, decode_responses=True, socket_timeout=2
        )

    def objects(self, client: Redis) -> Any:
        """The cluster's encrypted store (the shared bucket, the session's master key)."""
        from recordings.keyring import KeyRing
        from recordings.objects import EncryptedObjects
        from recordings.storage import S3Storage

        storage = S3Storage(self.s3_endpoint, BUCKET, S3_KEY, S3_SECRET)
        return EncryptedObjects(client, KeyRing(client, MASTER_KEY), storage)

    def calls(self, client: Redis) -> Any:
        """A call store that opens the cluster's transcripts."""
        from calls.store import CallStore

        return CallStore(client, self.objects(client))

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive()]


def _node_env(public_url: str, redis_env: dict[str, str], s3: str, llm: str, apis: dict[str, int], max_calls: int) -> dict[str, str]:  # fmt: skip
    return {
        **os.environ,
        "BONMONIQ_MODE": "cluster",
        "BONMONIQ_PUBLIC_URL": public_url,
        **redis_env,
        "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
        "BONMONIQ_STORAGE": "s3",
        "BONMONIQ_S3_ENDPOINT": s3,
        "BONMONIQ_S3_BUCKET": BUCKET,
        "BONMONIQ_S3_ACCESS_KEY": S3_KEY,
        "BONMONIQ_S3_SECRET_KEY": S3_SECRET,
        "BONMONIQ_LLM_URL": llm,
        "BONMONIQ_NODE_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
        "BONMONIQ_NODE_LEASE_SECONDS": str(LEASE_S),
        "BONMONIQ_DRAIN_GRACE_SECONDS": "90",
        "BONMONIQ_MAX_CALLS": str(max_calls),
        "BONMONIQ_INBOUND_CONCURRENT_CALLS": "1000",
        "BONMONIQ_CONFIG_WRITES_PER_MINUTE": "100000",
        "BONMONIQ_CARRIER_DOWN_SECONDS": "2",
        "BONMONIQ_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "BONMONIQ_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "BONMONIQ_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "BONMONIQ_TWILIO_API_BASE": f"http://127.0.0.1:{apis['twilio']}",
        "BONMONIQ_TELNYX_API_KEY": TELNYX_API_KEY,
        "BONMONIQ_TELNYX_PUBLIC_KEY": TELNYX_PUBLIC_KEY,
        "BONMONIQ_TELNYX_CONNECTION_ID": "cluster-connection",
        "BONMONIQ_TELNYX_API_BASE": f"http://127.0.0.1:{apis['telnyx']}/v2",
        "BONMONIQ_SINCH_APP_KEY": SINCH_APP_KEY,
        "BONMONIQ_SINCH_APP_SECRET": SINCH_APP_SECRET,
        "BONMONIQ_SINCH_PROJECT_ID": "cluster-project",
        "BONMONIQ_SINCH_KEY_ID": "cluster-key",
        "BONMONIQ_SINCH_KEY_SECRET": "cluster-key-secret",
        "BONMONIQ_SINCH_VOICE_BASE": f"http://127.0.0.1:{apis['sinch']}",
        "BONMONIQ_SINCH_NUMBERS_BASE": f"http://127.0.0.1:{apis['sinch_numbers']}",
    }


def _moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(endpoint, timeout=1)
            break
        time.sleep(0.1)
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    return proc


def llm_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``bonmoniq llm-server`` on a free loopback port; the process and its ``/v1`` URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "llm-server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "BONMONIQ_VAR_DIR": str(root / "llm")},
        stdout=(root / "llm.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    v1 = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / "llm.log").read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(v1 + "/models", timeout=2).status_code == 200:
                return proc, v1
        time.sleep(0.3)
    raise AssertionError("the LLM server never answered")


def haproxy(root: Path, port: int, nodes: list[Node]) -> subprocess.Popen[bytes]:
    """HAProxy on ``port``: round robin over ``nodes``, health-checked on ``/readyz``."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    servers = "\n".join(f"    server {n.name} 127.0.0.1:{n.port} check" for n in nodes)
    cfg = root / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port, servers=servers))
    proc = subprocess.Popen(
        [binary, "-f", str(cfg), "-db"],
        stdout=(root / "haproxy.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / "haproxy.log").read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        time.sleep(0.2)
    raise AssertionError("HAProxy never reached a ready process")


@contextlib.contextmanager
def running_cluster(root: Path, n: int = 3, max_calls: int = 4) -> Iterator[Cluster]:
    """Start every part of a cluster of ``n`` processes under ``root``; stop them all after."""
    sentinels = SentinelCluster(root / "redis")
    s3_port, public_port = free_port(), free_port()
    apis = {k: free_port() for k in ("twilio", "telnyx", "sinch", "sinch_numbers")}
    procs: list[subprocess.Popen[bytes]] = []
    nodes: list[Node] = []
    try:
        sentinels.start()
        procs.append(_moto(s3_port, root / "moto.log"))
        llm, llm_url = llm_server(root)
        procs.append(llm)
        env = _node_env(
            f"http://127.0.0.1:{public_port}",
            sentinels.env(),
            f"http://127.0.0.1:{s3_port}",
            llm_url,
            apis,
            max_calls,
        )
        nodes = [Node(f"node{i}", root / f"node{i}", env) for i in range(n)]
        for node in nodes:  # all at once: their start-ups overlap
            node.start()
        deadline = time.monotonic() + READY_S
        for node in nodes:
            node.wait_ready(deadline)
        procs.append(haproxy(root, public_port, nodes))
        yield Cluster(
            root,
            sentinels,
            nodes,
            f"http://127.0.0.1:{public_port}",
            f"http://127.0.0.1:{s3_port}",
            llm_url,
            apis["telnyx"],
            procs,
        )
    finally:
        for node in nodes:  # all at once: each drains (no call is left) and exits
            if node.alive():
                node.signal(signal.SIGTERM)
        for node in nodes:
            _stop(node.proc)
        for proc in procs:
            _stop(proc)
        sentinels.stop()
