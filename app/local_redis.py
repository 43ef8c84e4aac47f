"""The state store of a process: the sentinels, ``BONMONIQ_REDIS_URL``, or a local redis-server."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from app.errors import PlatformError
from app.settings import Settings
from llm.server import child_env, die_with_parent

log = logging.getLogger(__name__)


class LocalRedis:
    """A redis-server child on a unix socket under ``var/redis`` (AOF on, no TCP port)."""

    def __init__(self, var_dir: Path) -> None:
        """Keep the data, socket and log under ``var_dir/redis``."""
        self.dir = (var_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"unix://{self.socket}"

    def answers(self) -> bool:
        """Whether a server already listens on the socket."""
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def _command(self, binary: str) -> list[str]:
        """The redis-server command line: unix socket only, AOF fsynced every second."""
        return [
            binary,
            *("--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"),
            *("--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec"),
            *("--save", "", "--logfile", str(self.dir / "redis.log")),
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server unless one already answers on the socket."""
        if self.answers():
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise PlatformError(
                "redis-server is not installed: run `make run` (it installs the Debian package "
                "redis-server) or set BONMONIQ_REDIS_URL"
            )
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            self._command(binary), env=child_env({}), preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PlatformError(f"redis-server exited; see {self.dir / 'redis.log'}")
            if self.answers():
                log.info("local redis-server started", extra={"socket": str(self.socket)})
                return
            time.sleep(0.05)
        raise PlatformError("redis-server did not answer in time")

    def stop(self) -> None:
        """Stop the server this object started (SIGTERM: Redis flushes its AOF and exits)."""
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._proc = None


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str | None]:
    """``BONMONIQ_REDIS_URL``, or a local server for as long as the block runs.

    ``None`` with ``BONMONIQ_REDIS_SENTINELS``: the master is found through the sentinels
    (:func:`app.core.open_store`), and no local server is started.
    """
    if settings.store.sentinels:
        yield None
        return
    if settings.store.url:
        yield settings.store.url
        return
    local = LocalRedis(settings.var_dir)
    local.start()
    try:
        yield local.url
    finally:
        local.stop()
