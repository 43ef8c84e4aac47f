"""``serve`` where the platform sets PORT and HOST (container platforms do): it becomes ready,
and its children (the embedded LLM server, the local redis-server) get only what they need."""

from __future__ import annotations

from pathlib import Path

import httpx

from llm.server import child_env
from tests.conftest import free_port, start_server, stop_server


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_child_gets_the_system_basics_and_its_settings_only() -> None:
    system = {"PATH": "/usr/bin", "LANG": "C.UTF-8"}
    platform = {"PORT": "8080", "HOST": "0.0.0.0", "API_KEY": "x", "CONFIG_FILE": "/etc/x"}
    parent = system | platform | {"BONMONIQ_MASTER_KEY": "secret"}
    assert child_env({"BONMONIQ_LLM_PROMPT_STATES_MB": "64"}, parent) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "BONMONIQ_LLM_PROMPT_STATES_MB": "64",
    }


async def test_serve_with_port_and_host_set_becomes_ready(tmp_path: Path) -> None:
    taken = free_port()
    # No BONMONIQ_REDIS_URL: serve starts its own redis-server too.
    server = start_server("", tmp_path, PORT=str(taken), HOST="127.0.0.1", BONMONIQ_REDIS_URL="")
    try:
        async with httpx.AsyncClient() as c:
            ready = await c.get(server.url + "/readyz")
        assert ready.status_code == 200, server.tail()
        assert ready.json()["llm"] == "reachable"
        kids = [environ(pid) for pid in children(server.proc.pid)]
        assert len(kids) >= 2, kids  # the LLM server and redis-server
        for env in kids:
            assert "PORT" not in env and "HOST" not in env
            assert not [k for k in env if k.startswith("BONMONIQ_") and "LLM" not in k], env
        assert any(env.get("BONMONIQ_LLM_PROMPT_STATES_MB") for env in kids)
    finally:
        stop_server(server)
