"""The embedded LLM server: llama-cpp-python's OpenAI-compatible server as a child process.

The child runs ``llm.llama_server``: that server, keeping each conversation's prompt state.
``bonmoniq llm-server`` runs one in the foreground for several platform processes. The give-way
counter (``llm.scheduler.UrgencyBoard``) is a file mapped on one host, handed only to a
process's own child: a shared server, on this host or another, runs without it. vLLM's
continuous batching schedules per token, and the shared server still takes its requests in
turns by sentence (``llm.scheduler.Scheduler``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from llm.endpoint import LLMEndpoint
from llm.errors import LLMUnavailable
from llm.settings import PROMPT_STATES_MB

log = logging.getLogger(__name__)


#: What a child process inherits from the platform's environment: where programs, libraries
#: and temporary files are, the locale, and thread and GPU placement. Nothing else:
#: llama-cpp-python's server reads HOST, PORT, API_KEY, CONFIG_FILE and its model settings from
#: the environment over its arguments, and container platforms set PORT and HOST for us.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    # OpenBLAS needs these on processors its older builds misdetect (wrong results or crashes).
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
)


def _reachable(host: str) -> str:
    """An address this host reaches a server listening on ``host`` at (any address: loopback)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1" if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host


def child_env(
    settings: Mapping[str, str], parent: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """A child's environment: ``INHERITED_ENV`` from ``parent``, and ``settings``."""
    return {k: parent[k] for k in INHERITED_ENV if k in parent} | dict(settings)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive the platform."""
    # Linux: the child gets SIGTERM if the platform dies, even by SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedLLMServer:
    """Starts ``python -m llm.llama_server`` on loopback, waits until ready, stops it on exit."""

    def __init__(
        self,
        model_path: Path,
        alias: str,
        log_path: Path,
        threads: int = 2,
        n_ctx: int = 2048,
        generation_threads: int | None = None,
        prompt_states_mb: int = PROMPT_STATES_MB,
        module: str = "llm.llama_server",
        urgency_file: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Prepare a server for the GGUF at ``model_path``, answering as model ``alias``.

        ``threads`` read the prompt; ``generation_threads`` write the answer (default: half as
        many, at least one: while the LLM writes, the TTS speaks what it wrote first). The
        server keeps up to ``prompt_states_mb`` of recent prompt states (llm/llama_server.py).
        ``module`` is the server run: the platform's own, or ``llama_cpp.server``, the stock
        llama-cpp-python server it builds on (same options; the benchmark's baseline uses it).
        ``urgency_file`` is the platform's ``UrgencyBoard`` (llm/scheduler.py): the rest of an
        answer waits while a caller waits for the platform's work. ``host``/``port``: where it
        listens (default loopback on a free port; ``bonmoniq llm-server`` for several processes).
        """
        self.model_path = model_path
        self.alias = alias
        self.log_path = log_path
        self.threads = threads
        self.generation_threads = generation_threads or max(1, threads // 2)
        self.n_ctx = n_ctx
        self.prompt_states_mb = prompt_states_mb
        self.module = module
        self.urgency_file = urgency_file
        self.host = host
        self.requested_port = port
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> LLMEndpoint:
        """The server's endpoint from this host (valid after :meth:`start`)."""
        return LLMEndpoint(f"http://{_reachable(self.host)}:{self.port}", self.alias)

    def start(self, timeout: float = 60.0) -> LLMEndpoint:
        """Start the child and block until ``/v1/models`` answers."""
        self.port = self.requested_port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        options = {
            "--model": str(self.model_path),
            "--model_alias": self.alias,
            "--host": self.host,
            "--port": str(self.port),
            "--n_ctx": str(self.n_ctx),
            "--n_threads": str(self.generation_threads),
            "--n_threads_batch": str(self.threads),
            "--verbose": "False",
            # Calls share the server: a new request must queue, not cut off another call's answer.
            "--interrupt_requests": "False",
        }
        cmd = [sys.executable, "-m", self.module, *(x for kv in options.items() for x in kv)]
        with self.log_path.open("ab") as out:
            # Unbuffered: the log file gets each line as the server writes it.
            own = {
                "BONMONIQ_LLM_PROMPT_STATES_MB": str(self.prompt_states_mb),
                "PYTHONUNBUFFERED": "1",
            }
            if self.urgency_file is not None:
                own["BONMONIQ_LLM_URGENCY_FILE"] = str(self.urgency_file)
            env = child_env(own)
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
            )
        log.info("embedded LLM server starting", extra={"port": self.port, "pid": self._proc.pid})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LLMUnavailable(
                    f"embedded LLM server exited with {self._proc.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(f"{self.endpoint.v1}/models", timeout=1.0).status_code == 200:
                    log.info("embedded LLM server ready", extra={"port": self.port})
                    return self.endpoint
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise LLMUnavailable(f"embedded LLM server not ready after {timeout:.0f} s")

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s)."""
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            log.info("embedded LLM server stopped")
        self._proc = None

    def alive(self) -> bool:
        """Whether the child is running."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> LLMEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
