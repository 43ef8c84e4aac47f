"""The `bonmoniq` command line, run as a real process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY, REPO
from tests.helpers import bonmoniq


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

    from calls.records import Turn
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


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BONMONIQ_LLM_PROMPT_STATES_MB", "-1"),  # a section with its own prefix
        ("BONMONIQ_VAD_STOP_SECS", "soon"),  # a section under the platform's prefix
        ("BONMONIQ_REDIS_KEY_PREFIX", "a*b"),  # a glob character would break SCAN patterns
    ],
)
def test_an_invalid_setting_is_named_as_it_is_set(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = bonmoniq("agents", "list", env={variable: value, "BONMONIQ_VAR_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert f"invalid settings: {variable}:" in one_line_error(result)


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


def test_operator_actions_are_audited(env: dict[str, str], tmp_path: Path) -> None:
    import redis
    from redis.asyncio import Redis

    from app.commands import tenant_ref
    from recordings.keyring import KeyRing

    client = redis.Redis.from_url(env["BONMONIQ_REDIS_URL"], decode_responses=True)

    def entries(stream: str) -> list[dict[str, str]]:
        return [fields for _, fields in client.xrange(f"audit:{stream}")]

    def who(entry: dict[str, str]) -> tuple[str, str, str]:
        return entry["key_id"], entry["address"], entry["request_id"]

    created = bonmoniq(
        "tenants", "create", "Audited Co", "--json", "--concurrent-calls", "3", env=env
    )
    assert created.returncode == 0, created.stderr
    tenant, api_key = json.loads(created.stdout).values()
    rotated = bonmoniq("tenants", "rotate-key", "Audited Co", env=env)
    assert rotated.returncode == 0, rotated.stderr
    [create, rotate] = entries(tenant)
    # An operator, from the command line: no address, no request id.
    assert who(create) == who(rotate) == ("operator", "", "")
    assert create["target"] == rotate["target"] == tenant
    assert (create["action"], rotate["action"]) == ("tenant.create", "tenant.rotate_key")
    assert json.loads(create["detail"]) == {
        "via": "cli",
        "calls_per_minute": 10,
        "concurrent_calls": 3,
        "daily_spend_cents": 1000,
        "allowed_destinations": [],
    }
    assert json.loads(rotate["detail"]) == {"via": "cli", "data_keys": 0}
    assert api_key.rsplit("_", 1)[1] not in json.dumps([create, rotate])  # never the secret

    # Platform-wide actions, and a tenant's offboarding (its own log goes with it), are kept
    # in the operator's stream.
    swept = bonmoniq("retention", "sweep", "--json", env=env)
    assert swept.returncode == 0, swept.stderr
    gone = bonmoniq("tenants", "offboard", tenant, "--export", str(tmp_path / "out"), env=env)
    assert gone.returncode == 0, gone.stderr
    assert entries(tenant) == []
    [sweep, offboard] = entries("_operator")
    assert who(sweep) == who(offboard) == ("operator", "", "")
    assert (sweep["action"], sweep["target"]) == ("retention.sweep", "")
    assert json.loads(sweep["detail"]) == {"via": "cli", "erased": 0, "held": 0}
    # Named by a keyed digest: nothing of an offboarded tenant stays, its id included.
    ref = tenant_ref(KeyRing(Redis(), MASTER_KEY), tenant)
    assert (offboard["action"], offboard["target"]) == ("tenant.offboard", ref)
    assert tenant not in json.dumps(offboard)
    assert json.loads(offboard["detail"]) == {"via": "cli", "calls": 0}


def test_audited_commands_need_the_master_key(env: dict[str, str]) -> None:
    without = {k: v for k, v in env.items() if k != "BONMONIQ_MASTER_KEY"}
    os.environ.pop("BONMONIQ_MASTER_KEY", None)
    refused = bonmoniq("tenants", "create", "Unaudited Co", env=without)
    assert "master key" in one_line_error(refused)
    import redis

    assert not redis.Redis.from_url(env["BONMONIQ_REDIS_URL"]).keys("tenant*")
