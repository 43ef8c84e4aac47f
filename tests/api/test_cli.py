"""The `bonmoniq` command line, run as a real process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY, REPO


def bonmoniq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(redis_server: str, tmp_path: Path) -> dict[str, str]:
    import redis

    url = redis_server.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    return {
        "BONMONIQ_REDIS_URL": url,
        "BONMONIQ_VAR_DIR": str(tmp_path),
        "BONMONIQ_LOG_LEVEL": "WARNING",
        "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
    }


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("bonmoniq: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith("{") for line in lines[:-1]), result.stderr  # the rest: JSON logs
    return errors[0]


def test_agents_numbers_and_errors(env: dict[str, str]) -> None:
    ok = bonmoniq("agents", "add", "sales", "--prompt", "Sell bread.", "--language", "en", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "already" in one_line_error(bonmoniq("agents", "add", "sales", "--prompt", "x", env=env))
    assert "language" in one_line_error(
        bonmoniq("agents", "add", "b", "--prompt", "x", "--language", "xx", env=env)
    )
    assert "AI" in one_line_error(  # the announcement must say it is an AI, as through the API
        bonmoniq("agents", "add", "c", "--prompt", "x", "--announcement", ".", env=env)
    )
    assert "E.164" in one_line_error(
        bonmoniq("numbers", "add", "555-0100", "--agent", "sales", env=env)
    )
    assert "no agent" in one_line_error(
        bonmoniq("numbers", "add", "+15555550100", "--agent", "ghost", env=env)
    )
    assert (
        bonmoniq("numbers", "add", "+1 555 555 0100", "--agent", "sales", env=env).returncode == 0
    )
    listed = bonmoniq("numbers", "list", env=env)
    assert listed.stdout.split() == ["+15555550100", "sales"]
    assert "sales" in bonmoniq("agents", "list", env=env).stdout
    assert "no call" in one_line_error(bonmoniq("calls", "show", "call_missing", "--json", env=env))


def test_calls_show_json(env: dict[str, str]) -> None:
    import asyncio

    from redis.asyncio import Redis

    from calls.store import Turn
    from carriers.base import InboundCall
    from recordings.keyring import KeyRing
    from recordings.objects import EncryptedObjects
    from recordings.storage import LocalStorage
    from tests.conftest import sealing_calls, write_transcript

    async def seed() -> str:
        client = Redis.from_url(env["BONMONIQ_REDIS_URL"], decode_responses=True)
        store = sealing_calls(client)
        call_id, _, _ = await store.open_inbound(
            InboundCall("twilio", "CA" + "5" * 32, "AC1", "+1555", "+15555550100", "ringing"),
            None,
            1.0,
        )
        await store.add_turn(call_id, Turn("caller", "hello", 2.0))
        objects = EncryptedObjects(
            client,
            KeyRing(client, MASTER_KEY),
            LocalStorage(Path(env["BONMONIQ_VAR_DIR"]) / "objects"),
        )
        await write_transcript(objects, "default", call_id, [("caller", "hello", 2.0)])
        await client.aclose()
        return call_id

    call_id = asyncio.run(seed())
    shown = bonmoniq("calls", "show", call_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["call_id"] == call_id and report["state"] == "rejected"
    assert [e["type"] for e in report["events"]] == ["rejected", "caller_turn"]
    assert report["transcript"] == [
        {"role": "caller", "text": "hello", "at": 2.0, "interrupted": False}
    ]


def test_local_redis_is_started_when_no_url_is_set(tmp_path: Path) -> None:
    env = {"BONMONIQ_VAR_DIR": str(tmp_path), "BONMONIQ_LOG_LEVEL": "WARNING"}
    os.environ.pop("BONMONIQ_REDIS_URL", None)
    assert bonmoniq("agents", "add", "a1", "--prompt", "p", env=env).returncode == 0
    # The data outlived the server the command started (AOF under var/redis).
    assert (tmp_path / "redis" / "appendonlydir").is_dir()
    assert "a1" in bonmoniq("agents", "list", env=env).stdout


def test_models_verify(tmp_path: Path) -> None:
    result = bonmoniq("models", "verify", "--json", env={"BONMONIQ_VAR_DIR": str(REPO / "var")})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["role"] for r in rows} == {"stt", "llm", "tts"}
    assert all(len(r["sha256"]) == 64 and r["size"] > 0 and r["licence"] for r in rows)
    gpu = bonmoniq("models", "verify", "--profile", "gpu", env={"BONMONIQ_VAR_DIR": str(tmp_path)})
    assert "sha256 pin" in one_line_error(gpu)


def test_invalid_settings_are_one_line(tmp_path: Path) -> None:
    result = bonmoniq(
        "agents", "list", env={"BONMONIQ_PUBLIC_URL": "ftp://x", "BONMONIQ_VAR_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "BONMONIQ_PUBLIC_URL" in one_line_error(result)


def test_third_party_llm_is_refused_at_start(tmp_path: Path, redis_server: str) -> None:
    result = bonmoniq(
        "serve",
        "--port",
        "1",
        env={
            "BONMONIQ_LLM_URL": "https://api.openai.com/v1",
            "BONMONIQ_VAR_DIR": str(tmp_path),
            "BONMONIQ_REDIS_URL": redis_server,
            "BONMONIQ_LOG_LEVEL": "WARNING",
        },
    )
    assert "third-party AI" in one_line_error(result)


def test_provisioning_commands_give_one_line_errors(env: dict[str, str]) -> None:
    # Local development accounts: the carriers' APIs are expected on loopback, where nothing runs.
    result = bonmoniq(
        "numbers",
        "search",
        "--country",
        "FR",
        env=env | {"BONMONIQ_REDIS_URL": env["BONMONIQ_REDIS_URL"]},
    )
    # Unreachable: marked down, and an EU search never falls over to a US carrier.
    assert "sinch (the only EU carrier) is unavailable" in one_line_error(result)
    assert "E.164" in one_line_error(bonmoniq("numbers", "rent", "12", "--agent", "x", env=env))
    assert "not one of your numbers" in one_line_error(
        bonmoniq("calls", "place", "--from", "+12125550100", "--to", "+12125550101", env=env)
    )
    only_twilio = env | {
        "BONMONIQ_TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "BONMONIQ_TWILIO_AUTH_TOKEN": "t",
    }
    assert "sinch" in one_line_error(
        bonmoniq("numbers", "search", "--country", "DE", env=only_twilio)
    )
    partial = env | {"BONMONIQ_TELNYX_API_KEY": "k"}
    assert "partly configured" in one_line_error(
        bonmoniq("numbers", "search", "--country", "US", env=partial)
    )
