"""``bonmoniq serve``: bring the platform up, serve HTTP and WebSockets, tear down on exit."""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn

from api.app import create_app
from api.runtime import DEMO_AGENT, DEMO_EU_NUMBER, DEMO_NUMBER, running_platform, seed_demo
from api.settings import Settings
from recordings.lifecycle import Lifecycle

log = logging.getLogger(__name__)


def banner(settings: Settings, demo_number: str | None) -> str:
    """What to do next, printed once the platform is ready."""
    lines = [
        "",
        f"Bonmoniq Voice is ready on http://{settings.host}:{settings.port}",
        f"  carriers reach it at {settings.public_url} (BONMONIQ_PUBLIC_URL)",
        f"  Twilio voice webhook: {settings.public('/webhooks/twilio/voice')}",
    ]
    if demo_number:
        lines += [
            f"  demo agent '{DEMO_AGENT}' answers {demo_number}",
            "",
            "Place a first call from a second terminal:",
            f"  .venv/bin/bonmoniq call --to {demo_number} "
            '--say "What time do you open on Saturday?"',
            "then read it back with: .venv/bin/bonmoniq calls show CALL_ID",
            "",
            "Over the other carriers (local development accounts):",
            f"  .venv/bin/bonmoniq call --carrier telnyx --to {demo_number}",
            f"  .venv/bin/bonmoniq call --carrier sinch --to {DEMO_EU_NUMBER}",
            f"  (the EU number {DEMO_EU_NUMBER} is refused over Twilio and Telnyx: EU residency)",
        ]
    return "\n".join(lines) + "\n"


async def serve(settings: Settings, demo: bool = False) -> int:
    """Run until SIGINT/SIGTERM."""
    async with running_platform(settings) as platform:
        demo_number = None
        if demo:
            await seed_demo(platform.directory)
            if await platform.directory.lookup(DEMO_NUMBER):
                demo_number = DEMO_NUMBER
        # Every agent's announcement and greeting are synthesized before the first call.
        t0 = time.monotonic()
        agents = await platform.prepare_all()
        took = round(time.monotonic() - t0, 2)
        log.info("fixed phrases ready", extra={"agents": agents, "seconds": took})
        config = uvicorn.Config(
            create_app(platform),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            ws_max_size=1 << 20,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        # uvicorn offers no start event to wait on.
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            log.info("platform ready", extra={"host": settings.host, "port": settings.port})
            print(banner(settings, demo_number), flush=True)
        sweeper = asyncio.create_task(sweep_forever(platform.lifecycle, settings))
        try:
            await task
        finally:
            sweeper.cancel()
    return 0


async def sweep_forever(lifecycle: Lifecycle, settings: Settings) -> None:
    """Delete what is past retention now, then every ``BONMONIQ_RETENTION_SWEEP_SECONDS``."""
    while True:
        try:
            await lifecycle.sweep(time.time())
        except Exception:  # Redis or storage away: the next sweep tries again
            log.exception("retention sweep failed")
        await asyncio.sleep(settings.retention_sweep_seconds)
