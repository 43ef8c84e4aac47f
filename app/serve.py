"""``bonmoniq serve``: bring the platform up, serve HTTP and WebSockets, tear down on exit.

SIGTERM or SIGINT drains the process: it takes no new calls, serves the calls it carries to
their end (up to the drain grace), then exits 0; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from api import metrics
from app.errors import PlatformError
from app.http import http_app
from app.runtime import DEMO_AGENT, DEMO_EU_NUMBER, DEMO_NUMBER, running_platform, seed_demo
from app.settings import Settings
from carriers.base import carrier_time_limit
from cluster.lease import Lease
from recordings.lifecycle import Erasure, Lifecycle
from telephony.admission import Admission

log = logging.getLogger(__name__)


def banner(settings: Settings, demo_number: str | None, try_path: str | None = None) -> str:
    """What to do next, printed once the platform is ready.

    ``try_path``: the demo agent's test page with a token for one browser call.
    """
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
    if try_path:
        lines += [
            "",
            "Or talk to the demo agent from a browser on this machine (one call, within an hour):",
            f"  http://{settings.host}:{settings.port}{try_path}",
        ]
    return "\n".join(lines) + "\n"


class MetricsServer(uvicorn.Server):
    """The metrics listener: it leaves SIGINT/SIGTERM to the main server, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield


#: How long the demo's browser-call token printed at start may be used.
DEMO_TOKEN_S = 3600
#: How often a draining process looks at its count of calls.
DRAIN_POLL_S = 0.5


def drain_grace_seconds(settings: Settings) -> int:
    """How long a draining process waits for its calls: the setting, or the longest call.

    The longest call: the longer of the inbound and outbound maximum lengths, plus the time a
    call at its maximum takes to say its closing phrase and hang up.
    """
    if settings.cluster.drain_grace_seconds is not None:
        return settings.cluster.drain_grace_seconds
    call = settings.call
    return carrier_time_limit(max(call.max_seconds_of("inbound"), call.max_seconds_of("outbound")))


class DrainingServer(uvicorn.Server):
    """The public listener: the first SIGTERM/SIGINT drains, the second exits at once.

    Draining: :class:`~telephony.admission.Admission` refuses new inbound calls (busy) and
    ``/readyz`` answers 503 ``draining``, while HTTP, status callbacks and the media streams of
    calls already admitted are served as before; once no call is counted here, or the grace is
    over, uvicorn shuts down gracefully.
    """

    def __init__(self, config: uvicorn.Config, admission: Admission, grace_s: float) -> None:
        """Serve ``config``; drain ``admission``'s calls for at most ``grace_s`` seconds."""
        super().__init__(config)
        self.admission = admission
        self.grace_s = grace_s
        self.drained: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM call :meth:`handle_exit` on the loop; nothing re-raised after."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start the drain, or, when it is on already, exit now."""
        calls = self.admission.slots.in_progress(time.time())
        name = signal.Signals(sig).name
        if self.drained is None:
            log.info(
                "drain started",
                extra={"signal": name, "calls": calls, "grace_s": self.grace_s},
            )
            self.admission.drain()
            self.drained = asyncio.get_running_loop().create_task(self.drain())
            return
        log.warning("second signal: exiting now", extra={"signal": name, "calls": calls})
        self.should_exit = self.force_exit = True

    async def drain(self) -> None:
        """Wait until no call is counted here or the grace is over, then stop serving."""
        deadline = time.monotonic() + self.grace_s
        last = -1
        while not self.should_exit:
            await self.admission.settle_pending(time.time())
            calls = self.admission.slots.in_progress(time.time())
            if calls == 0:
                log.info("drain finished: no call left, exiting")
                break
            if time.monotonic() >= deadline:
                log.warning("drain grace over: exiting with calls on", extra={"calls": calls})
                break
            if calls != last:
                log.info("draining", extra={"calls": calls})
                last = calls
            await asyncio.sleep(DRAIN_POLL_S)
        self.should_exit = True


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
    # In the cluster (heartbeat, commands, reaper) for the whole serving time, drain included;
    # the SIP stack (when BONMONIQ_SIP_PORT is set) and the browser calls too.
    async with (
        running_platform(settings) as platform,
        platform.cluster_running(),
        platform.sip_running(),
        platform.webrtc_running(),
    ):
        demo_number = try_path = None
        if demo:
            await seed_demo(platform.directory)
            route = await platform.directory.lookup(DEMO_NUMBER)
            if route is not None:
                demo_number = DEMO_NUMBER
                agent_id = route.agent.agent_id
                token = await platform.webrtc_tokens.issue(route.tenant, agent_id, DEMO_TOKEN_S)
                try_path = f"/try/{agent_id}#token={token}"
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
        server = DrainingServer(config, platform.admission, drain_grace_seconds(settings))
        task = asyncio.create_task(server.serve())
        # uvicorn offers no start event to wait on.
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            log.info("platform ready", extra={"host": settings.host, "port": settings.port})
            print(banner(settings, demo_number, try_path), flush=True)
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
    log.info("platform stopped")
    return 0


async def sweep_forever(lifecycle: Lifecycle, settings: Settings) -> None:
    """Delete what is past retention now, then every ``BONMONIQ_RETENTION_SWEEP_SECONDS``.

    One process of the platform sweeps at a time: the holder of the ``sweep`` lease, which
    it keeps while it lives (renewed at each sweep) and gives back when it stops.
    """
    every = settings.recordings.retention_sweep_seconds
    lease = Lease(lifecycle.redis, "sweep", 2 * every + 60, settings.cluster.node_id)
    try:
        while True:
            await sweep_if_holder(lifecycle, lease, time.time())
            await asyncio.sleep(every)
    finally:
        with contextlib.suppress(Exception):  # best effort: the lease lapses on its own
            await lease.release()


async def sweep_if_holder(lifecycle: Lifecycle, lease: Lease, now: float) -> Erasure | None:
    """Sweep at ``now`` if this process holds (or takes) ``lease``; ``None`` if it did not."""
    try:
        if not await lease.acquire():
            return None
        return await lifecycle.sweep(now)
    except Exception:  # Redis or storage away: the next sweep tries again
        log.exception("retention sweep failed")
        return None
