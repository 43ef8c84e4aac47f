"""A process at its cap and a process draining: /readyz sends new calls elsewhere, a webhook
that still arrives gets the carrier's busy answer and is counted, and on SIGTERM the calls in
progress are served to their end before the process exits 0. One real platform (cap 2) and
Twilio's simulator; the drain test stops it, so it runs last."""

from __future__ import annotations

import asyncio
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis

from app.serve import DrainingServer
from calls.events import CallEventType
from calls.store import CallStore
from carriers.base import StatusUpdate
from carriers.simulation import SimulationResult, trim_silence
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from telephony.admission import Admission, member
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, start_server, stop_server
from tests.helpers import BAKERY, scrape
from voice.engines import PHONE_RATE, synthesize

NUMBER = "+15555550100"
QUESTIONS = ("What time do you open on Saturday?", "Do you sell birthday cakes?")
REFUSED = 'bonmoniq_calls_admitted_total{reason="%s",result="refused"}'


# -- the drain's steps, on the server class itself --------------------------------------------


async def test_a_signal_drains_until_no_call_is_left_and_a_second_one_exits_at_once(
    redis: Redis,
) -> None:
    admission = Admission(redis, max_calls=2, tenant_inbound_calls=2, max_call_seconds=900)
    assert await admission.admit("t", member("twilio", "CA1"), time.time()) is None
    admission.attach(member("twilio", "CA1"))
    server = DrainingServer(uvicorn.Config("never:loaded"), admission, grace_s=60)
    server.handle_exit(signal.SIGTERM, None)
    assert admission.draining and server.drained is not None
    busy = await admission.admit("t", member("twilio", "CA2"), time.time())
    assert busy is not None and busy.limit == "draining"
    await asyncio.sleep(0.1)
    assert not server.should_exit  # a call is on
    await admission.release("t", member("twilio", "CA1"))
    await asyncio.wait_for(server.drained, 5)
    assert server.should_exit and not server.force_exit

    # A second signal during a drain exits at once, calls or not.
    again = Admission(redis, max_calls=2, tenant_inbound_calls=2, max_call_seconds=900)
    assert await again.admit("t", member("twilio", "CA3"), time.time()) is None
    server = DrainingServer(uvicorn.Config("never:loaded"), again, grace_s=60)
    server.handle_exit(signal.SIGTERM, None)
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit and server.force_exit
    assert server.drained is not None
    await asyncio.wait_for(server.drained, 5)

    # The grace over, the process exits with its calls on.
    late = DrainingServer(uvicorn.Config("never:loaded"), again, grace_s=0)
    late.handle_exit(signal.SIGTERM, None)
    assert late.drained is not None
    await asyncio.wait_for(late.drained, 5)
    assert late.should_exit and again.slots.in_progress(time.time()) == 1


# -- on a running platform ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A platform that holds two calls and drains for at most a minute, on its own database."""
    server = start_server(
        redis_server.rsplit("/", 1)[0] + "/13", tmp_path_factory.mktemp("drain"),
        BONMONIQ_MAX_CALLS="2", BONMONIQ_DRAIN_GRACE_SECONDS="60",
    )  # fmt: skip
    yield server
    if server.proc.poll() is None:
        stop_server(server)


@pytest.fixture(scope="module")
def lines(voice: Any) -> list[bytes]:
    """Each caller's one question, spoken."""
    return [trim_silence(synthesize(voice, q, PHONE_RATE)) for q in QUESTIONS]


@pytest.fixture
async def client(capped: LiveServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(capped.redis_url, decode_responses=True)
    directory = Directory(client)
    if await directory.lookup(NUMBER) is None:
        await directory.add_agent(Agent(name="bakery", prompt=BAKERY))
        await directory.add_number(NUMBER, "bakery")
    yield client
    await client.aclose()


def caller(server: LiveServer) -> TwilioSimulator:
    return TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)


def two_calls(server: LiveServer, lines: list[bytes]) -> asyncio.Future[list[SimulationResult]]:
    """Two calls, each asking one question, started now."""
    said = zip(QUESTIONS, lines, strict=True)
    return asyncio.gather(*(caller(server).run([(q, line)]) for q, line in said))


async def metric(server: LiveServer, name: str, value: float) -> None:
    """Wait (30 s at most) for ``name`` to read ``value`` on the metrics listener."""
    deadline = time.monotonic() + 30
    while (await scrape(server)).get(name) != value:
        assert time.monotonic() < deadline, f"{name} never {value}: {server.tail()}"
        await asyncio.sleep(0.2)


async def busy(server: LiveServer) -> str:
    """A new call's webhook: the carrier's busy answer, and the call it refused."""
    sim = caller(server)
    r = await sim.post_signed("/webhooks/twilio/voice", sim.voice_params())
    assert r.status_code == 200
    reject = ET.fromstring(r.text).find("Reject")
    assert reject is not None and reject.get("reason") == "busy", r.text
    return sim.call_sid


async def not_ready(server: LiveServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get("/readyz")
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    return body


def answered(result: SimulationResult) -> None:
    """The caller heard an answer to its question."""
    assert result.turns and result.turns[0].latency_s is not None, result.turns


@pytest.mark.slow
async def test_at_the_cap_readyz_is_503_and_a_new_call_gets_busy_and_is_counted(
    capped: LiveServer, client: Redis, lines: list[bytes]
) -> None:
    before = await scrape(capped)
    assert before["bonmoniq_max_calls"] == 2 and before["bonmoniq_draining"] == 0
    calls = two_calls(capped, lines)
    await metric(capped, "bonmoniq_calls_in_progress", 2)
    problem = await not_ready(capped)
    assert problem["code"] == "at_capacity", problem
    refused = await busy(capped)
    after = await scrape(capped)
    assert after[REFUSED % "max_calls"] == before.get(REFUSED % "max_calls", 0) + 1
    admitted = 'bonmoniq_calls_admitted_total{reason="",result="admitted"}'
    assert after[admitted] == before.get(admitted, 0) + 2
    for result in await calls:
        answered(result)
    store = CallStore(client)
    call_id = await store.by_carrier_id("twilio", refused)
    assert call_id is not None and (await store.get(call_id)).state == "rejected"  # type: ignore[union-attr]
    # Their media sessions over, the places are free again.
    await metric(capped, "bonmoniq_calls_in_progress", 0)
    async with httpx.AsyncClient(base_url=capped.url) as c:
        assert (await c.get("/readyz")).status_code == 200


@pytest.mark.slow
async def test_sigterm_during_two_calls_serves_them_to_their_end_then_exits_0(
    capped: LiveServer, client: Redis, lines: list[bytes]
) -> None:
    calls = two_calls(capped, lines)
    await metric(capped, "bonmoniq_active_calls", 2)  # both media sessions run
    capped.proc.send_signal(signal.SIGTERM)
    problem = await not_ready(capped)
    assert problem["code"] == "draining", problem
    await busy(capped)
    families = await scrape(capped)
    assert families["bonmoniq_draining"] == 1 and families[REFUSED % "draining"] == 1
    results = await calls
    for result in results:
        answered(result)
    assert await asyncio.to_thread(capped.proc.wait, 60) == 0
    log = capped.log.read_text()
    started, finished = log.index('"drain started"'), log.index("drain finished")
    assert '"calls": 2' in log[started : log.index("\n", started)], log[started:][:400]
    assert started < finished < log.index("platform stopped")
    store = CallStore(client)
    for result in results:
        events = [e.type for e in await store.events(result.call_id)]
        assert CallEventType.MEDIA_CLOSED in events and CallEventType.ERROR not in events, events
        # Twilio's final status callback reaches another process: the call completes.
        await store.apply_status(
            "twilio", StatusUpdate(result.call_sid, "completed", 3), time.time()
        )
        record = await store.get(result.call_id)
        assert record is not None and record.state == "completed"
