"""``POST /v1/calls/{id}/transfer`` on a running platform, for calls no session holds."""

from __future__ import annotations

import time

import httpx
from redis.asyncio import Redis

from carriers.base import InboundCall
from routing import Agent, Directory
from tests.conftest import LiveServer, sealing_calls
from tests.helpers import auth, new_tenant

ROUTING = {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"}


async def a_call(redis: Redis, tenant: str, name: str, number: str, desk: str | None) -> str:
    d = Directory(redis)
    agent = await d.add_agent(
        Agent(
            name=name,
            prompt="p",
            tenant=tenant,
            transfer_number=desk,
            tools=("end_call", "transfer") if desk else ("end_call",),
        )
    )
    route = await d.attach(number, agent)
    inbound = InboundCall("twilio", "CA" + number[-4:] * 8, "AC1", "+15555550190", number, "x")
    call_id, _, _ = await sealing_calls(redis).open_inbound(inbound, route, time.time(), ROUTING)
    return call_id


async def test_transfer_answers_for_calls_without_a_number_or_a_session(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant_id, admin = await new_tenant(live_server, "transfers")
    no_desk = await a_call(live_redis, tenant_id, "plain", "+15555550761", None)
    desk = await a_call(live_redis, tenant_id, "desk", "+15555550762", "+14155550123")
    _, other = await new_tenant(live_server, "others")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post(f"/v1/calls/{no_desk}/transfer", headers=auth(admin))
        assert r.status_code == 409 and r.json()["code"] == "transfer_unavailable", r.text
        assert r.headers["content-type"] == "application/problem+json"
        # A transfer number, but no process runs the call's media.
        r = await c.post(f"/v1/calls/{desk}/transfer", headers=auth(admin))
        assert r.status_code == 409 and r.json()["code"] == "call_not_live", r.text
        r = await c.post(f"/v1/calls/{desk}/transfer", headers=auth(other))
        assert r.status_code == 404, r.text
        audit = (await c.get("/v1/audit", headers=auth(admin))).json()["items"]
        # An admitted transfer is answered at once (202 transferring); the hand-over follows.
        spec = (await c.get("/openapi.json")).json()["paths"]["/v1/calls/{call_id}/transfer"]
        answers = spec["post"]["responses"]
        assert "202" in answers and "200" not in answers, sorted(answers)
        assert "transferring" in str(
            (await c.get("/openapi.json")).json()["components"]["schemas"]["CommandOut"]
        )
    tried = sorted(e["target"] for e in audit if e["action"] == "call.transfer")
    assert tried == sorted([no_desk, desk]), tried  # refusals are audited too
