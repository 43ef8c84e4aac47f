"""Shared fixtures: a real redis-server on a free port, settings, the real speech models."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from redis.asyncio import Redis

from calls.store import CallStore
from llm.server import free_port
from recordings.crypto import Identity
from recordings.keyring import KeyRing
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage
from recordings.transcripts import TranscriptLog, TurnRecord
from tests import privacy

REPO = Path(__file__).resolve().parents[1]
ACCOUNT_SID = "AC" + "e2e0" * 8
AUTH_TOKEN = "e2e-auth-token-0123456789abcdef"
# Telnyx publishes no key pair: one made here plays the account's.
_TELNYX_KEY = Ed25519PrivateKey.generate()
TELNYX_PRIVATE_KEY = base64.b64encode(_TELNYX_KEY.private_bytes_raw()).decode()
TELNYX_PUBLIC_KEY = base64.b64encode(
    _TELNYX_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()
TELNYX_API_KEY = "KEYe2e0123456789"
SINCH_APP_KEY = "669E367E-6BBA-48AB-AF15-266871C28135"  # the documented test application
SINCH_APP_SECRET = "BeIukql3pTKJ8RGL5zo0DA=="
OPERATOR_TOKEN = "operator-e2e-token"
#: The platform's master key in tests (a fresh one per test session).
MASTER_KEY = os.urandom(32)
__all__ = [
    "ACCOUNT_SID",
    "AUTH_TOKEN",
    "OPERATOR_TOKEN",
    "SINCH_APP_KEY",
    "SINCH_APP_SECRET",
    "TELNYX_API_KEY",
    "TELNYX_PRIVATE_KEY",
    "REPO",
    "LiveServer",
    "MASTER_KEY",
    "call_store",
    "flushed",
    "encrypted_store",
    "sealing_calls",
    "write_transcript",
    "free_port",
    "redis_command",
    "start_redis",
    "start_server",
    "stop_server",
    "WORLD_PUBLIC_URL",
    "WORLD_SID",
    "WORLD_TOKEN",
]


privacy.install_httpx_hook()


@pytest.fixture(autouse=True)
def nothing_in_clear() -> Iterator[None]:
    """After each test: no secret, transcript words or stray phone number in Redis or logs.

    Every POST to ``/v1/`` carries an ``Idempotency-Key`` (tests/privacy.py), so each stored
    response is scanned too; what the session sent and was issued is searched for, with
    patterns of each kind.
    """
    yield
    found = privacy.WATCH.findings()
    assert not found, "in clear:\n" + "\n".join(map(str, found[:40]))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A last scan, of what the session's teardown wrote (a server's last log lines)."""
    found = privacy.WATCH.findings()
    if found:
        print("\nin clear after the session:\n" + "\n".join(map(str, found[:40])))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def redis_command(port: int, data: Path) -> list[str]:
    """redis-server's command line: on loopback at ``port``, its append-only file in ``data``."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: `make test` installs it"
    listen = ["--port", str(port), "--bind", "127.0.0.1"]
    return [binary, *listen, "--dir", str(data), "--save", "", "--appendonly", "yes"]


def start_redis(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real redis-server (Debian package) on a free loopback port; the process and its URL."""
    port = free_port()
    proc = subprocess.Popen(redis_command(port, data), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    privacy.REDIS_DIRS.append(data)  # scanned after each test (tests/privacy.py)
    privacy.REDIS_URLS.append(url)
    client = sync_redis.Redis.from_url(url)
    for _ in range(200):
        try:
            if client.ping():
                break
        except sync_redis.ConnectionError:
            time.sleep(0.05)
    return proc, url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Redis for the whole session."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
async def redis(redis_server: str) -> AsyncIterator[Redis]:
    """A client on an empty database."""
    client = Redis.from_url(redis_server, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@dataclass
class LiveServer:
    url: str
    redis_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    telnyx_api_port: int = 0
    sinch_api_port: int = 0
    sinch_numbers_port: int = 0
    twilio_api_port: int = 0
    metrics_port: int = 0
    #: The SIP stack's port (UDP and TCP, on 127.0.0.1).
    sip_port: int = 0

    @property
    def metrics_url(self) -> str:
        """The metrics listener's ``/metrics`` (not on the public listener)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def tail(self, lines: int = 40) -> str:
        """The end of the platform's log, for an assertion's message."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_server(redis_url: str, var: Path, ready: str = "/readyz", **env: str) -> LiveServer:
    """`bonmoniq serve` as a child process on a free port; returns once ``ready`` answers 200."""
    port, telnyx_port, sinch_port = free_port(), free_port(), free_port()
    sinch_numbers_port, twilio_port = free_port(), free_port()
    metrics_port, sip_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "BONMONIQ_PORT": str(port),
        "BONMONIQ_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "BONMONIQ_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BONMONIQ_REDIS_URL": redis_url,
        "BONMONIQ_VAR_DIR": str(var),
        "BONMONIQ_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "BONMONIQ_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        # Telnyx and Sinch REST APIs: played on loopback by their simulators.
        "BONMONIQ_TELNYX_API_KEY": TELNYX_API_KEY,
        "BONMONIQ_TELNYX_PUBLIC_KEY": TELNYX_PUBLIC_KEY,
        "BONMONIQ_TELNYX_CONNECTION_ID": "e2e-connection",
        "BONMONIQ_TELNYX_API_BASE": f"http://127.0.0.1:{telnyx_port}/v2",
        "BONMONIQ_SINCH_APP_KEY": SINCH_APP_KEY,
        "BONMONIQ_SINCH_APP_SECRET": SINCH_APP_SECRET,
        "BONMONIQ_SINCH_PROJECT_ID": "e2e-project",
        "BONMONIQ_SINCH_KEY_ID": "e2e-key",
        "BONMONIQ_SINCH_KEY_SECRET": "e2e-key-secret",
        "BONMONIQ_SINCH_VOICE_BASE": f"http://127.0.0.1:{sinch_port}",
        # Nothing here may reach a carrier's real host: every REST API is on loopback.
        "BONMONIQ_SINCH_NUMBERS_BASE": f"http://127.0.0.1:{sinch_numbers_port}",
        "BONMONIQ_TWILIO_API_BASE": f"http://127.0.0.1:{twilio_port}",
        "BONMONIQ_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
        # Tests reach unreachable carrier APIs on purpose; a failed carrier is back soon.
        "BONMONIQ_CARRIER_DOWN_SECONDS": "2",
        # The shared server serves many tests' tenants and calls in quick succession: its
        # write and call caps are out of the way (tests/api/test_capacity.py sets its own).
        "BONMONIQ_CONFIG_WRITES_PER_MINUTE": "100000",
        "BONMONIQ_MAX_CALLS": "1000",
        "BONMONIQ_INBOUND_CONCURRENT_CALLS": "1000",
        # stop_server's SIGTERM stops it at once (tests/api/test_drain.py drains for real).
        "BONMONIQ_DRAIN_GRACE_SECONDS": "0",
        # The SIP stack on loopback; SIPp plays the registrars there.
        "BONMONIQ_SIP_HOST": "127.0.0.1",
        "BONMONIQ_SIP_PORT": str(sip_port),
        "BONMONIQ_SIP_REGISTRAR_ALLOW": '["127.0.0.1"]',
        **env,
    }
    log = var / "serve.log"
    privacy.LOGS.append(log)
    privacy.KEY_PREFIXES.add(full_env.get("BONMONIQ_REDIS_KEY_PREFIX", ""))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return LiveServer(
                    url,
                    redis_url,
                    proc,
                    log,
                    telnyx_port,
                    sinch_port,
                    sinch_numbers_port,
                    twilio_port,
                    metrics_port,
                    int(full_env["BONMONIQ_SIP_PORT"]),
                )
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("platform not ready: " + log.read_text()[-3000:])


def encrypted_store(server: LiveServer, client: Redis) -> EncryptedObjects:
    """The running platform's encrypted store, opened with its master key."""
    return EncryptedObjects(
        client, KeyRing(client, MASTER_KEY), LocalStorage(server.log.parent / "objects")
    )


def call_store(server: LiveServer, client: Redis) -> CallStore:
    """A call store that reads the running platform's (encrypted) transcripts."""
    return CallStore(client, encrypted_store(server, client))


def sealing_calls(client: Redis) -> CallStore:
    """A call store with the session's master key: it seals and opens calls' parties."""
    return CallStore(client, keyring=KeyRing(client, MASTER_KEY))


async def write_transcript(
    objects: EncryptedObjects, tenant: str, call_id: str, turns: list[tuple[str, str, float]]
) -> None:
    """Seed an encrypted transcript as a call would have written it."""
    log = TranscriptLog(objects, Identity(tenant, call_id, "transcript"), 1e12)
    for role, text, at in turns:
        if len(text) >= 10:  # words distinctive enough to search the session's files for
            privacy.SEEN.words.add(text)
        await log.add(TurnRecord(role, text, at))
    await log.finish()


def stop_server(server: LiveServer) -> None:
    server.proc.terminate()
    server.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def live_server(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The platform on the real models; its own Redis database (unit tests flush db 0)."""
    server = start_server(redis_server.rsplit("/", 1)[0] + "/1", tmp_path_factory.mktemp("var"))
    yield server
    stop_server(server)


@contextlib.asynccontextmanager
async def flushed(server: LiveServer) -> AsyncIterator[Redis]:
    """A client on ``server``'s Redis database, emptied first."""
    client = Redis.from_url(server.redis_url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def live_redis(live_server: LiveServer) -> AsyncIterator[Redis]:
    async with flushed(live_server) as client:
        yield client


@pytest.fixture(scope="session")
def voice() -> object:
    """The local Piper voice, to speak the caller's lines."""
    from models import Role, profile_models, verify_model
    from voice.engines import load_voice

    return load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))


@pytest.fixture(scope="session")
def voices(voice: Any) -> object:
    """The embedded profile's voices, its Piper voice the one already loaded above."""
    from models import verify_voices
    from voice.voices import Voices

    models = verify_voices("cpu", REPO / "var" / "models")
    return Voices(models, preloaded={models[0].spec.name: voice})  # type: ignore[dict-item]


@pytest.fixture(scope="session")
def whisper() -> object:
    """The real Whisper model, to check what the caller heard."""
    from faster_whisper import WhisperModel

    from models import Role, profile_models, verify_model

    model = verify_model(profile_models("cpu")[Role.STT], REPO / "var" / "models")
    return WhisperModel(str(model.directory), device="cpu", compute_type="int8")


@pytest.fixture(scope="session")
def gguf() -> Path:
    """The real SmolLM2 model file."""
    from models import Role, profile_models, verify_model

    model = verify_model(profile_models("cpu")[Role.LLM], REPO / "var" / "models")
    return model.files[0].path


#: The carriers' account and the platform's public URL of ``world``.
WORLD_SID, WORLD_TOKEN = "AC" + "b" * 32, "tok"
WORLD_PUBLIC_URL = "https://voice.example.eu"


@pytest.fixture
async def world(redis: Redis) -> tuple[Any, Any, dict[str, Any]]:
    """Telephony against fakes of the carriers' REST APIs on a real Redis: (telephony, fakes,
    health), where ``health["value"]`` is the carriers' health the policy sees."""
    from app.settings import Settings
    from routing import Agent, Directory
    from routing.policy import Health, Policy
    from telephony.service import Telephony
    from tests.fakes.carrier_apis import fake_carriers

    fakes, kits = fake_carriers(WORLD_SID, WORLD_TOKEN)
    health = {"value": Health()}
    directory = Directory(redis)
    await directory.add_agent(Agent(name="bakery", prompt="p"))
    policy = Policy.from_dict({"countries": {"CA": {"order": ["telnyx", "twilio"]}}})
    settings = Settings(public_url=WORLD_PUBLIC_URL)
    telephony = Telephony(
        directory,
        sealing_calls(redis),
        policy,
        kits,
        lambda now: health["value"],
        settings,
        max_call_seconds=settings.call.call_max_seconds,
    )
    return telephony, fakes, health


def telnyx_sim(server: LiveServer, to: str, **kw: Any) -> Any:
    from carriers.telnyx.simulator import TelnyxSimulator

    return TelnyxSimulator(
        server.url, TELNYX_PRIVATE_KEY, TELNYX_API_KEY, server.telnyx_api_port, to=to, **kw
    )


def sinch_sim(server: LiveServer, to: str, **kw: Any) -> Any:
    from carriers.sinch.simulator import SinchSimulator

    return SinchSimulator(
        server.url, SINCH_APP_KEY, SINCH_APP_SECRET, server.sinch_api_port, to=to, **kw
    )


# The scripted language model (tests/fakes/scripted_llm.py) and a platform that talks to it.

#: The environment of a platform on the scripted LLM beyond ``BONMONIQ_LLM_*``: the
#: integrations' settings for tests (fast webhook retries; loopback endpoints allowed by the
#: egress allow-list; the test CA trusted for HTTPS endpoints). H3 names them (changes.md).
SCRIPTED_ENV: dict[str, str] = {
    # Tools and webhooks reach test endpoints on loopback (refused without the allow-list).
    "BONMONIQ_EGRESS_ALLOW": '["127.0.0.1", "localhost"]',
    # Webhook retries within a test: tiny backoff, quick polling, call.ended at once.
    "BONMONIQ_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
    "BONMONIQ_WEBHOOK_RETRY_CAP_SECONDS": "0.3",
    "BONMONIQ_WEBHOOK_POLL_SECONDS": "0.1",
    "BONMONIQ_WEBHOOK_CALL_ENDED_DELAY_SECONDS": "0.5",
    "BONMONIQ_WEBHOOK_TIMEOUT_SECONDS": "5",
}


@pytest.fixture(scope="session")
def scripted_llm() -> Iterator[Any]:
    """The scripted OpenAI-compatible server (vLLM's shapes), for the whole session.

    Tests set what it answers with ``scripted_llm.script(...)`` (which also forgets the
    requests of earlier tests).
    """
    from tests.fakes.scripted_llm import ScriptedLLM

    with ScriptedLLM() as llm:
        yield llm


@pytest.fixture(scope="session")
def tool_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A test certificate authority (trustme); the scripted platform trusts it."""
    import trustme

    ca = trustme.CA()
    pem = tmp_path_factory.mktemp("tool-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    ca.pem_path = pem  # type: ignore[attr-defined]
    return ca


def scripted_env(llm: Any, ca_pem: Path | None = None) -> dict[str, str]:
    """The environment that points a platform at ``llm`` (and trusts ``ca_pem``)."""
    env = {"BONMONIQ_LLM_URL": llm.url, "BONMONIQ_LLM_MODEL": llm.model, **SCRIPTED_ENV}
    if ca_pem is not None:
        env["SSL_CERT_FILE"] = str(ca_pem)
        env["BONMONIQ_EGRESS_CA_FILE"] = str(ca_pem)
    return env


@pytest.fixture(scope="session")
def customer(tool_ca: Any) -> Iterator[Any]:
    """A customer's HTTPS endpoint on loopback (tests/fakes/customer.py), trusted via ``tool_ca``."""
    from tests.fakes.customer import CustomerEndpoint

    with CustomerEndpoint(tool_ca) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def scripted_server(
    redis_server: str, scripted_llm: Any, tool_ca: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The platform on the real speech models and the scripted LLM (its own Redis database)."""
    server = start_server(
        redis_server.rsplit("/", 1)[0] + "/9",
        tmp_path_factory.mktemp("scripted"),
        **scripted_env(scripted_llm, tool_ca.pem_path),
    )
    yield server
    stop_server(server)


@pytest.fixture
async def scripted_redis(scripted_server: LiveServer) -> AsyncIterator[Redis]:
    """A client on the scripted platform's Redis database, emptied first."""
    async with flushed(scripted_server) as client:
        yield client
