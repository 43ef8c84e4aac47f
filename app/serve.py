"""``bonmoniq serve``: bring the platform up, serve HTTP and WebSockets, tear down on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator

import uvicorn

from api import metrics
from app.errors import PlatformError
from app.http import http_app
from app.runtime import DEMO_AGENT, DEMO_EU_NUMBER, DEMO_NUMBER, running_platform, seed_demo
from app.settings import Settings
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
    if settings.metrics_listen is not None:
        lines.append(f"  metrics (not public): http://{settings.metrics_addr}/metrics")
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


class MetricsServer(uvicorn.Server):
    """The metrics listener: it leaves SIGINT/SIGTERM to the main server, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield


def metrics_socket(settings: Settings) -> socket.socket | None:
    """The metrics listener's bound socket (``None`` when it is off).

    Raises:
        PlatformError: the address cannot be bound (in use, or not an address of this host).
    """
    addr = settings.metrics_listen
    if addr is None:
        return None
    host, port = addr
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PlatformError(
            f"the metrics listener cannot use {settings.metrics_addr} ({e.strerror}): set "
            "BONMONIQ_METRICS_ADDR to a free host:port of this machine, or to off"
        ) from e
    sock.listen(128)
    return sock


async def serve(settings: Settings, demo: bool = False) -> int:
    """Run until SIGINT/SIGTERM."""
    metrics_sock = metrics_socket(settings)  # before anything starts: a taken port fails fast
    try:
        return await _serve(settings, demo, metrics_sock)
    finally:
        if metrics_sock is not None:
            metrics_sock.close()


async def _serve(settings: Settings, demo: bool, metrics_sock: socket.socket | None) -> int:
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
            http_app(platform),
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
        metrics_server = MetricsServer(
            uvicorn.Config(metrics.app(), log_config=None, access_log=False, lifespan="off")
        )
        scraped = None
        if metrics_sock is not None:
            scraped = asyncio.create_task(metrics_server.serve(sockets=[metrics_sock]))
            log.info("metrics listener ready", extra={"addr": settings.metrics_addr})
        try:
            await task
        finally:
            sweeper.cancel()
            metrics_server.should_exit = True
            if scraped is not None:
                await scraped
    return 0


async def sweep_forever(lifecycle: Lifecycle, settings: Settings) -> None:
    """Delete what is past retention now, then every ``BONMONIQ_RETENTION_SWEEP_SECONDS``."""
    while True:
        try:
            await lifecycle.sweep(time.time())
        except Exception:  # Redis or storage away: the next sweep tries again
            log.exception("retention sweep failed")
        await asyncio.sleep(settings.recordings.retention_sweep_seconds)
