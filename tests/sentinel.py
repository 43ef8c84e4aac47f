"""A real Redis Sentinel topology on loopback: a master, one replica, three sentinels.

Debian's ``redis-server`` and ``redis-sentinel``, each on a free port with its files in a
directory of its own. The master keeps an append-only file fsynced every second and refuses
writes while its replica lags more than a second (``min-replicas-to-write 1``,
``min-replicas-max-lag 1``): the bound README "Redis" documents. The replica has no such rule,
so once promoted with no replica of its own it still takes writes.

    with SentinelCluster(tmp_path) as cluster:
        env = cluster.env()  # BONMONIQ_REDIS_SENTINELS, BONMONIQ_REDIS_MASTER_NAME
        cluster.kill_master()  # SIGKILL
        cluster.wait_promoted()  # the replica's port, once the sentinels agree on it
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis as sync_redis

from llm.server import free_port
from tests import privacy

__all__ = ["SentinelCluster"]

HOST = "127.0.0.1"


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    assert found, f"{name} is missing: `make test` installs the Debian package"
    return found


class SentinelCluster:
    """A master, a replica and three sentinels watching them under ``master_name``."""

    def __init__(
        self,
        base: Path,
        master_name: str = "bonmoniq",
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        """Files under ``base``; a master is down after ``down_after_ms`` without an answer."""
        self.base = base
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        #: Redis processes by port (the master's and the replica's).
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each sentinel."""
        return [(HOST, p) for p in self.sentinel_ports]

    @property
    def sentinels_setting(self) -> str:
        """The sentinels as ``BONMONIQ_REDIS_SENTINELS`` takes them: ``host:port,...``."""
        return ",".join(f"{h}:{p}" for h, p in self.sentinel_addrs)

    def env(self) -> dict[str, str]:
        """The environment a platform process needs to find the master through the sentinels."""
        return {
            "BONMONIQ_REDIS_SENTINELS": self.sentinels_setting,
            "BONMONIQ_REDIS_MASTER_NAME": self.master_name,
        }

    def url(self, port: int | None = None, db: int = 0) -> str:
        """A plain URL of the master (or of the server on ``port``), bypassing the sentinels."""
        return f"redis://{HOST}:{port or self.master_port}/{db}"

    # Starting and stopping.

    def _server(self, port: int, *extra: str) -> None:
        data = self.base / f"redis-{port}"
        data.mkdir(parents=True, exist_ok=True)
        privacy.REDIS_DIRS.append(data)  # scanned after each test (tests/privacy.py)
        privacy.REDIS_URLS.append(self.url(port))
        command = [
            _binary("redis-server"),
            *("--port", str(port), "--bind", HOST, "--dir", str(data), "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "everysec"),
            *("--logfile", str(data / "redis.log")),
            *extra,
        ]
        self.servers[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _wait(lambda: sync_redis.Redis(host=HOST, port=port, socket_timeout=1).ping())

    def _sentinel(self, port: int) -> None:
        data = self.base / f"sentinel-{port}"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "sentinel.conf"  # rewritten by the sentinel as it learns the topology
        conf.write_text(
            f"port {port}\nbind {HOST}\ndir {data}\nlogfile {data / 'sentinel.log'}\n"
            f"sentinel monitor {self.master_name} {HOST} {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        proc = subprocess.Popen([_binary("redis-sentinel"), str(conf)], stdout=subprocess.DEVNULL)
        self.sentinels.append(proc)
        _wait(lambda: sync_redis.Redis(host=HOST, port=port, socket_timeout=1).ping())

    def start(self) -> None:
        """Start the master, the replica (in sync) and the sentinels (each seeing the others)."""
        self._server(
            self.master_port, "--min-replicas-to-write", "1", "--min-replicas-max-lag", "1"
        )
        self._server(self.replica_port, "--replicaof", HOST, str(self.master_port))
        master = sync_redis.Redis(host=HOST, port=self.master_port, socket_timeout=1)
        _wait(lambda: int(master.info("replication")["connected_slaves"]) >= 1)
        _wait(lambda: master.set("sentinel-cluster:ready", "1"))  # a replica acknowledges
        for port in self.sentinel_ports:
            self._sentinel(port)
        for port in self.sentinel_ports:
            sentinel = sync_redis.Redis(host=HOST, port=port, socket_timeout=1)
            _wait(lambda s=sentinel: _sentinels_known(s, self.master_name) >= 2)

    def stop(self) -> None:
        """Stop every process this object started."""
        for proc in [*self.sentinels, *self.servers.values()]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.sentinels, *self.servers.values()]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sentinels.clear()

    def __enter__(self) -> SentinelCluster:
        """Start the topology; stopped again if it does not come up."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every process."""
        self.stop()

    # Failover.

    def master_address(self) -> tuple[str, int] | None:
        """The master as the first sentinel that answers names it; ``None`` if none answers."""
        for port in self.sentinel_ports:
            try:
                addr = sync_redis.Redis(
                    host=HOST, port=port, socket_timeout=1
                ).sentinel_get_master_addr_by_name(self.master_name)
            except sync_redis.RedisError:
                continue
            if addr:
                return str(addr[0].decode() if isinstance(addr[0], bytes) else addr[0]), int(
                    addr[1]
                )
        return None

    def kill_master(self) -> int:
        """SIGKILL the current master (no AOF flush, no goodbye); its port."""
        port = self.master_port
        proc = self.servers[port]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return port

    def wait_promoted(self, timeout: float = 30.0) -> int:
        """Wait until the sentinels name another master and it takes writes; its port."""
        old = self.master_port

        def promoted() -> bool:
            addr = self.master_address()
            if addr is None or addr[1] == old:
                return False
            client = sync_redis.Redis(host=HOST, port=addr[1], socket_timeout=1)
            if client.info("replication")["role"] != "master":
                return False
            self.master_port, self.replica_port = addr[1], old
            return True

        _wait(promoted, timeout)
        return self.master_port


def _sentinels_known(sentinel: sync_redis.Redis, name: str) -> int:
    """How many other sentinels ``sentinel`` knows of for ``name``."""
    state = sentinel.sentinel_master(name)
    return int(state.get("num-other-sentinels", 0))


def _wait(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except sync_redis.RedisError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"sentinel topology: timed out waiting ({last!r})")
