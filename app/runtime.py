"""Bringing a serving platform up: Redis, the models, the LLM server, the encrypted store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from app.cluster_mode import check_cluster_mode
from app.core import build_platform, open_objects, open_store
from app.errors import PlatformError
from app.local_redis import redis_url
from app.platform import Platform
from app.settings import Settings
from calls.archive import CallArchive
from carriers.registry import load_carriers
from llm.endpoint import LLMEndpoint, check_endpoint
from llm.scheduler import UrgencyBoard
from llm.server import EmbeddedLLMServer
from models import Role, verify_profile, verify_voices
from recordings.migrate import migrate_clear_transcripts
from routing.directory import Agent, AgentExists, Directory
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
    server = embedded_server(settings, gguf, urgency_file=board.path if board else None)
    with server as endpoint:
        yield endpoint


def embedded_server(
    settings: Settings,
    gguf: Path,
    *,
    urgency_file: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> EmbeddedLLMServer:
    """The embedded LLM server of ``settings`` on ``gguf`` (not started), listening at ``host``."""
    return EmbeddedLLMServer(
        gguf,
        settings.llm.model,
        settings.var_dir / "log" / "llm-server.log",
        settings.cpu_threads,
        generation_threads=settings.llm.generation_threads,
        prompt_states_mb=settings.llm.prompt_states_mb,
        urgency_file=urgency_file,
        host=host,
        port=port,
    )


@contextlib.asynccontextmanager
async def running_platform(settings: Settings) -> AsyncIterator[Platform]:
    """Everything a serving process needs, torn down in reverse order on exit.

    In cluster mode the master key, S3 storage, the LLM server and Redis must be given
    (:func:`app.cluster_mode.check_cluster_mode`): checked first, and the master key is
    never generated.
    """
    check_cluster_mode(settings)
    if settings.llm.url:  # fail fast, before anything starts
        check_endpoint(settings.llm.url, settings.llm.allowed_hosts)
    carriers = load_carriers(settings.carriers, settings.var_dir)
    models = verify_profile(settings.profile, settings.models_cache)
    voices = verify_voices(settings.profile, settings.models_cache)
    llm = models.get(Role.LLM)
    gguf = next((f.path for f in llm.files if f.path.suffix == ".gguf"), None) if llm else None
    # The embedded LLM server and this process share a count of the work callers wait for.
    board = None if settings.llm.url else UrgencyBoard(settings.var_dir / "run" / "urgent", True)
    with redis_url(settings) as url, llm_endpoint(settings, gguf, board) as endpoint:
        client = open_store(settings, url)
        try:
            await client.ping()
            device = "cuda" if settings.profile == "gpu" else "cpu"
            cache_bytes = settings.call.phrase_cache_mb * 1024 * 1024
            engines = Engines.load(
                models, endpoint, voices, settings.cpu_threads, device, board, cache_bytes
            )
            create_master = settings.cluster.mode == "development"
            objects = open_objects(settings, client, create_master=create_master)
            await migrate_clear_transcripts(client, CallArchive(client), objects)
            platform = build_platform(
                settings, client, objects=objects, engines=engines, carriers=carriers
            )
            # Carriers marked down by any process of the platform, read every second.
            health = asyncio.create_task(platform.carrier_health.refresh_forever())
            try:
                yield platform
            finally:
                health.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await health
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
