"""Bringing a platform up: the local Redis, the models, the LLM server, the demo."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from redis.asyncio import Redis

from app.platform import Platform
from app.settings import Settings
from llm.endpoint import LLMEndpoint, check_endpoint
from llm.scheduler import UrgencyBoard
from llm.server import EmbeddedLLMServer
from models import Role, verify_profile
from recordings.keyring import MasterKeyError
from recordings.migrate import migrate_clear_transcripts
from recordings.objects import EncryptedObjects
from recordings.setup import StorageConfigError, encrypted_objects, make_storage
from routing.directory import Agent, AgentExists, Directory
from store.redis import PlatformError, connect, redis_url
from telephony.accounts import load_accounts
from voice.engines import Engines

log = logging.getLogger(__name__)

DEMO_AGENT = "demo"
DEMO_NUMBER = "+15555550100"
#: A French number for the demo agent too: only Sinch may carry it (EU residency).
DEMO_EU_NUMBER = "+33185000100"
DEMO_PROMPT = (
    "You are Sam, the receptionist of Bonmoniq Bakery in Springfield. The bakery is open "
    "from 7 am to 6 pm, Monday to Saturday, and closed on Sunday. It sells bread, "
    "croissants and birthday cakes; cakes must be ordered two days ahead."
)


@contextlib.contextmanager
def llm_endpoint(
    settings: Settings, gguf: Path | None, board: UrgencyBoard | None = None
) -> Iterator[LLMEndpoint]:
    """The checked ``BONMONIQ_LLM_URL``, or the embedded server for as long as the block runs.

    The embedded server reads ``board`` (how much work callers wait for in this process).
    """
    if settings.llm.url:
        url = check_endpoint(settings.llm.url, settings.llm.allowed_hosts)
        key = settings.llm.api_key.get_secret_value() if settings.llm.api_key else None
        yield LLMEndpoint(url, settings.llm.model, key)
        return
    if gguf is None:
        raise PlatformError(
            f"profile {settings.profile!r} has no embedded LLM: set BONMONIQ_LLM_URL"
        )
    server = EmbeddedLLMServer(
        gguf, settings.llm.model, settings.var_dir / "log" / "llm-server.log", settings.cpu_threads,
        generation_threads=settings.llm.generation_threads,
        prompt_states_mb=settings.llm.prompt_states_mb,
        urgency_file=board.path if board is not None else None,
    )  # fmt: skip
    with server as endpoint:
        yield endpoint


def open_objects(
    settings: Settings, client: Redis, create_master: bool = False
) -> EncryptedObjects:
    """The encrypted store of ``settings`` (``serve`` creates the master key on first start)."""
    stored = settings.recordings
    s3 = {
        "endpoint": stored.s3.endpoint,
        "bucket": stored.s3.bucket,
        "access_key": stored.s3.access_key,
        "secret_key": stored.s3.secret_key.get_secret_value() if stored.s3.secret_key else None,
        "region": stored.s3.region,
    }
    try:
        storage = make_storage(settings.recordings.storage, settings.objects_path, s3)
        master = (
            settings.recordings.master_key.get_secret_value()
            if settings.recordings.master_key
            else None
        )
        return encrypted_objects(
            client, master, settings.master_key_path, storage, create_master=create_master
        )
    except (MasterKeyError, StorageConfigError) as e:
        raise PlatformError(str(e)) from e


@contextlib.asynccontextmanager
async def running_platform(settings: Settings) -> AsyncIterator[Platform]:
    """Everything a serving process needs, torn down in reverse order on exit."""
    if settings.llm.url:  # fail fast, before anything starts
        check_endpoint(settings.llm.url, settings.llm.allowed_hosts)
    accounts = load_accounts(settings)
    models = verify_profile(settings.profile, settings.models_cache)
    llm = models.get(Role.LLM)
    gguf = next((f.path for f in llm.files if f.path.suffix == ".gguf"), None) if llm else None
    # The embedded LLM server and this process share a count of the work callers wait for.
    board = None if settings.llm.url else UrgencyBoard(settings.var_dir / "run" / "urgent", True)
    with redis_url(settings) as url, llm_endpoint(settings, gguf, board) as endpoint:
        client = connect(url)
        try:
            await client.ping()
            device = "cuda" if settings.profile == "gpu" else "cpu"
            engines = Engines.load(models, endpoint, settings.cpu_threads, device, board,
                                   settings.call.phrase_cache_mb * 1024 * 1024)  # fmt: skip
            objects = open_objects(settings, client, create_master=True)
            await migrate_clear_transcripts(client, objects)
            yield Platform(settings, client, engines, accounts, objects=objects)
        finally:
            await client.aclose()


async def seed_demo(directory: Directory) -> bool:
    """On empty state, create the demo agent and number; ``True`` if it did."""
    if await directory.list_agents():
        return False
    try:
        await directory.add_agent(Agent(name=DEMO_AGENT, prompt=DEMO_PROMPT, language="en"))
    except AgentExists:
        return False
    await directory.add_number(DEMO_NUMBER, DEMO_AGENT)
    await directory.add_number(DEMO_EU_NUMBER, DEMO_AGENT)
    log.info("demo agent and numbers created", extra={"numbers": [DEMO_NUMBER, DEMO_EU_NUMBER]})
    return True
