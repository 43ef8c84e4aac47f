"""Three platform processes on loopback behind HAProxy, sharing Redis (through Sentinel), one
S3-compatible store (moto) and one embedded LLM server: calls over the balancer, a webhook and
its media on different processes, duplicate webhooks, the outbound limit, a process's cap,
SIGTERM drain, kill -9 of a process and of the Redis master.

One cluster serves the whole module; the scenarios that stop a process or Redis come last, in
this order: drain (process 2), kill -9 (process 1), Redis master.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from calls.state import CallState
from carriers.simulation import SimulationResult, trim_silence
from carriers.telnyx.simulator import FakeCallControl
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from store import keys
from tests.cluster.harness import HEARTBEAT_S, LEASE_S, Cluster, Node, running_cluster
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, TELNYX_API_KEY
from tests.helpers import BAKERY, FROM, auth, new_tenant, tenant_with_number, words
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow

NUMBER = "+15555550100"
#: The number of a tenant with an API key (live-call commands).
LIVE_NUMBER = "+15555550732"
CAP = 4  # BONMONIQ_MAX_CALLS of every process
QUESTION = "What time do you open on Saturday?"
FINAL = {str(s) for s in CallState.final()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), n=3, max_calls=CAP) as c:
        yield c


@pytest.fixture(scope="module")
async def agent(cluster: Cluster) -> None:
    """The bakery agent on NUMBER, recording, with a short announcement and greeting."""
    client = cluster.redis()
    d = Directory(client)
    await d.add_agent(
        Agent(
            name="bakery",
            prompt=BAKERY,
            recording=True,
            announcement="This AI call is recorded.",
            greeting="Bakery, hello.",
        )
    )
    await d.add_number(NUMBER, "bakery")
    await client.aclose()


@pytest.fixture
async def redis(cluster: Cluster, agent: None) -> AsyncIterator[Redis]:
    client = cluster.redis()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def line(voice: Any) -> bytes:
    return trim_silence(synthesize(voice, QUESTION, PHONE_RATE))


def sim(cluster: Cluster, base: str | None = None) -> TwilioSimulator:
    """A Twilio call to NUMBER, signed for the public URL, sent to ``base`` (or the balancer)."""
    return TwilioSimulator(cluster.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER, base_url=base)


async def talk(s: TwilioSimulator, line: bytes, questions: int = 1) -> SimulationResult:
    return await s.run(
        [(f"q{i}", line) for i in range(questions)], greeting_timeout=60, reply_timeout=60
    )


async def wait_event(redis: Redis, call_id: str, kind: str, limit_s: float = 60) -> float:
    """When (unix seconds) the call's first ``kind`` event happened, once it is stored."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError):
            for raw in await redis.lrange(keys.call_events(call_id), 0, -1):
                event = json.loads(raw)
                if event.get("type") == kind:
                    return float(event["at"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} event for {call_id}")


async def call_of(redis: Redis, s: TwilioSimulator, limit_s: float = 60) -> str:
    """The call id of simulator ``s``'s call once its webhook was accepted."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = await redis.get(keys.carrier_call("twilio", s.call_sid))
        if found:
            return str(found)
        await asyncio.sleep(0.1)
    raise AssertionError("the call was never recorded")


async def answered(cluster: Cluster, redis: Redis, s: TwilioSimulator, r: SimulationResult) -> None:
    """The call was answered: its transcript has the question, then an agent turn; once the
    carrier says it is over, its record is completed."""
    store = cluster.calls(redis)
    await wait_event(redis, r.call_id, "media_closed")
    turns = await store.transcript(r.call_id)
    caller = [i for i, t in enumerate(turns) if t.role == "caller"]
    assert caller and {"open", "saturday"} & words(turns[caller[0]].text), turns
    assert any(t.role == "agent" for t in turns[caller[0] + 1 :]), turns
    assert r.turns and r.turns[0].latency_s is not None, r.turns
    # The carrier's later webhooks go through the balancer (the process may have left since).
    s.base_url = cluster.url
    if isinstance(s, SplitSimulator):
        s.webhooks_url = cluster.url
    assert (await s.status("completed", 3)).status_code == 204
    record = await store.get(r.call_id)
    assert record is not None and record.state == "completed", record


async def metrics(node: Node) -> dict[str, float]:
    async with httpx.AsyncClient() as c:
        text = (await c.get(node.metrics_url)).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v
        for k, v in samples.items()
        if (k == name or k.startswith(name + "{")) and all(w in k for w in want)
    )


async def readyz(node: Node) -> int:
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            return (await c.get(node.url + "/readyz")).status_code
    except httpx.HTTPError:
        return 0


async def until_ready(node: Node, code: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await readyz(node) == code:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{node.name}'s /readyz never answered {code}: {node.tail()}")


async def members(redis: Redis, key: str) -> list[str]:
    """The call ids in ``key``, whatever kind of collection it is (none once it is gone)."""
    kind = await redis.type(key)
    if kind == "set":
        return [str(m) for m in await redis.smembers(key)]
    if kind == "zset":
        return [str(m) for m in await redis.zrange(key, 0, -1)]
    if kind == "hash":
        return [str(m) for m in await redis.hkeys(key)]
    return []


def twiml_call_id(text: str) -> str:
    stream = ET.fromstring(text).find("./Connect/Stream")
    assert stream is not None, text
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return str(params["call_id"])


# The cluster as a whole.


async def test_nine_calls_over_the_balancer_are_all_answered(
    cluster: Cluster, redis: Redis, line: bytes
) -> None:
    before = [await metrics(n) for n in cluster.nodes]
    for _ in range(3):  # three at a time: nine at once would measure 2 cores, not the cluster
        sims = [sim(cluster) for _ in range(3)]
        results = await asyncio.gather(*(talk(s, line) for s in sims))
        for s, r in zip(sims, results, strict=True):
            await answered(cluster, redis, s, r)
    # The balancer spread them: every process took webhooks.
    for node, was in zip(cluster.nodes, before, strict=True):
        now = await metrics(node)
        name = "bonmoniq_webhooks_total"
        taken = total(now, name, carrier="twilio") - total(was, name, carrier="twilio")
        assert taken > 0, node.name


class SplitSimulator(TwilioSimulator):
    """Posts its webhooks to one process and opens its media stream on another."""

    def __init__(self, cluster: Cluster, webhooks: Node, media: Node) -> None:
        super().__init__(cluster.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER, base_url=media.url)
        self.webhooks_url = webhooks.url

    async def post_signed(self, path: str, params: dict[str, str]) -> httpx.Response:
        media, self.base_url = self.base_url, self.webhooks_url
        try:
            return await super().post_signed(path, params)
        finally:
            self.base_url = media


async def test_a_webhook_on_one_process_and_its_media_on_another(
    cluster: Cluster, redis: Redis, line: bytes
) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    s = SplitSimulator(cluster, a, b)
    r = await talk(s, line)
    await answered(cluster, redis, s, r)


async def test_the_same_webhook_on_every_process_has_one_effect(
    cluster: Cluster, redis: Redis
) -> None:
    s = sim(cluster)
    before = await redis.zcard(keys.calls())
    sig_url, params = cluster.url + "/webhooks/twilio/voice", s.voice_params()
    from carriers.twilio.signature import SIGNATURE_HEADER, compute_signature

    headers = {SIGNATURE_HEADER: compute_signature(sig_url, list(params.items()), AUTH_TOKEN)}
    async with httpx.AsyncClient(timeout=30) as c:
        replies = await asyncio.gather(
            *(
                c.post(n.url + "/webhooks/twilio/voice", data=params, headers=headers)
                for n in cluster.nodes
            )
        )
    assert [r.status_code for r in replies] == [200] * 3, [r.text for r in replies]
    assert len({twiml_call_id(r.text) for r in replies}) == 1, [r.text for r in replies]
    assert await redis.zcard(keys.calls()) == before + 1
    assert (await s.status("canceled", 2)).status_code == 204  # the caller hung up


async def test_the_outbound_limit_holds_across_processes(cluster: Cluster, redis: Redis) -> None:
    limits = {"calls_per_minute": 100, "concurrent_calls": 3, "daily_spend_cents": 100000}
    _, admin = await tenant_with_number(cluster.nodes[0], redis, "Outbound Co", limits)  # type: ignore[arg-type]
    async with FakeCallControl(TELNYX_API_KEY, cluster.telnyx_api_port) as api:
        async with httpx.AsyncClient(timeout=30) as c:
            replies = await asyncio.gather(
                *(
                    c.post(
                        cluster.nodes[i % 3].url + "/v1/calls",
                        json={"from_number": FROM, "to": f"+1555555{7100 + i}"},
                        headers=auth(admin),
                    )
                    for i in range(12)
                )
            )
    codes = sorted(r.status_code for r in replies)
    assert codes == [201] * 3 + [429] * 9, [r.text for r in replies]
    assert len([x for x in api.log if x[1] == "dial"]) == 3


async def test_a_call_at_a_process_cap_gets_the_carriers_busy_answer(
    cluster: Cluster, redis: Redis
) -> None:
    node = cluster.nodes[0]
    before = total(await metrics(node), "bonmoniq_calls_admitted_total", result="refused")
    held: list[SplitSimulator] = []
    refused = None
    for _ in range(CAP + 1):  # answered calls whose stream never comes hold a place (30 s)
        s = SplitSimulator(cluster, node, node)
        r = await s.post_signed("/webhooks/twilio/voice", s.voice_params())
        assert r.status_code == 200, r.text
        if "<Reject" in r.text:
            refused = r.text
            break
        held.append(s)
        if len(held) == CAP:  # at the cap: the balancer is told to send calls elsewhere
            await until_ready(node, 503, 5)
    assert refused is not None and re.search(r'<Reject reason="busy"\s*/>', refused), refused
    assert len(held) <= CAP
    after = total(await metrics(node), "bonmoniq_calls_admitted_total", result="refused")
    assert after == before + 1
    for s in held:  # the callers hang up: the process takes calls again
        assert (await s.status("canceled", 2)).status_code == 204
    await until_ready(node, 200, 40)


async def test_a_hangup_asked_of_another_process_reaches_the_calls_process(
    cluster: Cluster, redis: Redis
) -> None:
    holder, asked, other = cluster.nodes
    tenant_id, admin = await new_tenant(holder, "Live Co")  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=cluster.url) as c:
        made = await c.post(
            "/v1/agents",
            json={"name": "desk", "system_prompt": "p", "recording": True},
            headers=auth(admin),
        )
        assert made.status_code == 201, made.text
    d = Directory(redis)
    await d.attach(LIVE_NUMBER, await d.get_agent_by_id(made.json()["agent_id"], tenant_id))
    s = TwilioSimulator(cluster.url, ACCOUNT_SID, AUTH_TOKEN, to=LIVE_NUMBER, base_url=holder.url)
    # The caller stays on the line, silent, until the platform hangs up.
    call = asyncio.create_task(s.run([("silence", bytes(8000 * 2 * 60))], greeting_timeout=60))
    call_id = await call_of(redis, s)
    await wait_event(redis, call_id, "recording_started")
    assert await cluster.calls(redis).holder(call_id) == holder.name
    async with httpx.AsyncClient(timeout=15) as c:
        stop = await c.post(f"{other.url}/v1/calls/{call_id}/stop-recording", headers=auth(admin))
        assert stop.status_code == 200, stop.text
        assert stop.json()["result"] == "recording_stopped", stop.text
        hang = await c.post(f"{asked.url}/v1/calls/{call_id}/hangup", headers=auth(admin))
        assert hang.status_code == 200 and hang.json()["result"] == "hung_up", hang.text
        result = await asyncio.wait_for(call, 60)
        assert result.closed_by_platform
        again = await c.post(f"{other.url}/v1/calls/{call_id}/hangup", headers=auth(admin))
        assert again.status_code == 409 and again.json()["code"] == "call_not_live", again.text
    sent = total(await metrics(asked), "bonmoniq_cluster_commands_total", action="hangup")
    assert sent >= 1
    assert (await s.status("completed", 2)).status_code == 204
    record = await cluster.calls(redis).get(call_id)
    assert record is not None and record.state == "completed", record
    assert not await cluster.objects(redis).of_call(call_id, "recording")  # deleted on stop


# Processes and Redis stopped: these come last, in this order.


async def test_sigterm_drains_a_process_without_dropping_a_call(
    cluster: Cluster, redis: Redis, line: bytes
) -> None:
    draining = cluster.nodes[2]
    sims = [sim(cluster, draining.url) for _ in range(2)]
    calls = [asyncio.create_task(talk(s, line, questions=2)) for s in sims]
    ids = [await call_of(redis, s) for s in sims]
    for call_id in ids:
        await wait_event(redis, call_id, "media_connected")
    draining.signal(signal.SIGTERM)
    await until_ready(draining, 503, 5)
    await asyncio.sleep(2 * 0.5 + 0.5)  # HAProxy's check (inter 500, fall 1) has seen it
    assert draining.alive(), "the process left before its calls ended"
    newcomers = [sim(cluster) for _ in range(2)]
    later = [asyncio.create_task(talk(s, line)) for s in newcomers]
    results = await asyncio.gather(*calls, *later)
    for s, r in zip([*sims, *newcomers], results, strict=True):
        await answered(cluster, redis, s, r)
    assert draining.proc is not None
    assert await asyncio.to_thread(draining.proc.wait, 60) == 0, draining.tail()


async def test_kill_9_of_a_process_ends_its_calls_and_spares_the_others(
    cluster: Cluster, redis: Redis, line: bytes
) -> None:
    victim, survivor = cluster.nodes[1], cluster.nodes[0]
    doomed = [sim(cluster, victim.url) for _ in range(2)]
    spared = sim(cluster, survivor.url)
    lost_calls = [asyncio.create_task(talk(s, line, questions=3)) for s in doomed]
    kept = asyncio.create_task(talk(spared, line, questions=2))
    ids = [await call_of(redis, s) for s in doomed]
    for call_id in ids:
        await wait_event(redis, call_id, "recording_started")
    victim.signal(signal.SIGKILL)
    killed_at = time.time()
    assert victim.proc is not None
    await asyncio.to_thread(victim.proc.wait, 10)
    for task in lost_calls:  # their media sockets die with the process
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
    store = cluster.calls(redis)
    bound = LEASE_S + HEARTBEAT_S
    for call_id in ids:
        ended_at = await wait_event(redis, call_id, "node_lost", limit_s=bound + 10)
        # Within the bound, plus a second for a survivor's sweep on a busy machine.
        assert ended_at - killed_at <= bound + 1.0, ended_at - killed_at
        record = await store.get(call_id)
        assert record is not None and record.state == "failed", record
    await answered(cluster, redis, spared, await kept)
    # Nothing the dead process carried stays in progress.
    for call_id in await members(redis, keys.node_calls(victim.name)):
        record = await store.get(call_id)
        assert record is None or record.state in FINAL, record
    # Every recording opens: complete, or truncated with a reason.
    objects = cluster.objects(redis)
    for call_id in [*ids, await call_of(redis, spared)]:
        for info in await objects.of_call(call_id, "recording"):
            opened = await objects.open(info)
            assert opened.complete or opened.reason, info


async def test_redis_master_killed_during_calls(
    cluster: Cluster, redis: Redis, line: bytes
) -> None:
    """Sentinel promotes the replica; the calls go on; later webhooks are answered; the
    acknowledged writes lost stay within what Redis acknowledged in the last second."""
    sims = [sim(cluster) for _ in range(2)]
    calls = [asyncio.create_task(talk(s, line, questions=2)) for s in sims]
    for s in sims:
        await wait_event(redis, await call_of(redis, s), "media_connected")
    counter = "cluster-test:acknowledged"
    acks: list[tuple[float, int]] = []
    after: list[int] = []
    failed = asyncio.Event()

    async def write() -> None:
        client = cluster.redis()
        try:
            while len(after) < 20:
                try:
                    value = int(await client.incr(counter))
                except (RedisError, OSError):
                    failed.set()
                    await asyncio.sleep(0.05)
                    continue
                if failed.is_set():
                    after.append(value)
                else:
                    acks.append((time.monotonic(), value))
                await asyncio.sleep(0.005)
        finally:
            await client.aclose()

    writer = asyncio.create_task(write())
    await asyncio.sleep(1.5)
    old = cluster.sentinels.kill_master()
    killed_at = time.monotonic()
    promoted = await asyncio.to_thread(cluster.sentinels.wait_promoted, 30)
    assert promoted != old
    await asyncio.wait_for(writer, 60)
    last_acked = acks[-1][1]
    lost = last_acked - (after[0] - 1)  # below 0: a write failed on the wire but applied
    in_last_second = sum(1 for t, _ in acks if t > killed_at - 1.0)
    assert lost <= in_last_second, (lost, in_last_second)
    print(f"Redis failover: {lost} acknowledged writes lost, {in_last_second} in the last second")
    results = await asyncio.gather(*calls)
    fresh = cluster.redis()
    try:
        for s, r in zip(sims, results, strict=True):
            await answered(cluster, fresh, s, r)
        later = sim(cluster)
        await answered(cluster, fresh, later, await talk(later, line))
    finally:
        await fresh.aclose()
