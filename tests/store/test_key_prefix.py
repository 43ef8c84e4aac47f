"""``BONMONIQ_REDIS_KEY_PREFIX`` on a running platform: every key it writes carries the prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from carriers.twilio.simulator import TwilioSimulator
from routing import Directory
from store import keys
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPERATOR_TOKEN,
    LiveServer,
    start_server,
    stop_server,
)
from tests.helpers import auth

PREFIX = "bmq-other:"
NUMBER = "+15555550177"
#: Another platform's key on the same Redis, without the prefix: a transcript in the old clear
#: form, which this platform's start-up migration must not take for its own.
OTHERS = "call:others-call:transcript"
OTHERS_TURN = '{"role": "caller", "text": "x", "at": 1.0}'


@pytest.fixture(scope="module")
def prefixed(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A platform writing under :data:`PREFIX`, alone on its (emptied) Redis database."""
    import redis

    url = redis_server.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    redis.Redis.from_url(url).rpush(OTHERS, OTHERS_TURN)
    server = start_server(
        url, tmp_path_factory.mktemp("prefixed"), BONMONIQ_REDIS_KEY_PREFIX=PREFIX
    )
    yield server
    stop_server(server)


@pytest.fixture
async def client(prefixed: LiveServer) -> AsyncIterator[Redis]:
    c = Redis.from_url(prefixed.redis_url, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
def our_prefix() -> Iterator[None]:
    """This process names keys as the platform does, for as long as the test runs."""
    keys.use_prefix(PREFIX)
    try:
        yield
    finally:
        keys.use_prefix("")


async def test_api_writes_and_a_webhook_write_only_prefixed_keys(
    prefixed: LiveServer, client: Redis, our_prefix: None
) -> None:
    async with httpx.AsyncClient(base_url=prefixed.url) as c:
        r = await c.post(
            "/v1/operator/tenants",
            json={"name": "Prefixed"},
            headers=auth(OPERATOR_TOKEN) | {"Idempotency-Key": "tenant-1"},
        )
        assert r.status_code == 201, r.text
        tenant, admin = r.json()["tenant_id"], r.json()["api_key"]
        r = await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin))
        assert r.status_code == 201, r.text
        r = await c.post(
            "/v1/agents", json={"name": "desk", "system_prompt": "p"}, headers=auth(admin)
        )
        assert r.status_code == 201, r.text
        agent_id = r.json()["agent_id"]
    directory = Directory(client)  # names keys with the prefix too (our_prefix)
    await directory.attach(NUMBER, await directory.get_agent_by_id(agent_id, tenant))
    sim = TwilioSimulator(prefixed.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    r = await sim.post_signed("/webhooks/twilio/voice", sim.voice_params())
    assert r.status_code == 200 and "<Stream" in r.text, r.text  # the number's agent was found

    written = sorted([str(k) async for k in client.scan_iter(count=1000)])
    assert written and [k for k in written if not k.startswith(PREFIX)] == [OTHERS]
    assert await client.lrange(OTHERS, 0, -1) == [OTHERS_TURN]  # not migrated: not ours
    call_ids = await client.zrange(PREFIX + "calls", 0, -1)
    assert len(call_ids) == 1
    call_id = call_ids[0]
    expected = {
        keys.tenants(),
        keys.tenant(tenant),
        keys.tenant_keys(tenant),
        keys.audit(tenant),
        keys.agents(tenant),
        keys.agent_names(tenant),
        keys.agent(tenant, agent_id),
        keys.number(NUMBER),
        keys.numbers(tenant),
        keys.limit_writes(tenant),
        keys.limit_inbound(tenant),
        keys.kek(tenant),
        keys.calls(),
        keys.tenant_calls(tenant),
        keys.retention(),
        keys.call(call_id),
        keys.call_events(call_id),
        keys.carrier_call("twilio", sim.call_sid),
    }
    assert expected <= set(written), sorted(expected - set(written))
    assert any(k.startswith(PREFIX + "idem:") for k in written)
    assert all(k.startswith(PREFIX) for k in expected)
