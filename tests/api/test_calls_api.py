"""``/v1/calls`` (read side) on a running platform: filters, cursor, isolation, audited transcripts."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from carriers.base import InboundCall
from routing import Agent, Directory
from tests.conftest import LiveServer, encrypted_store, sealing_calls, write_transcript
from tests.helpers import auth, new_tenant


async def seed(live_redis: Redis, tenant_id: str, n: int, server: LiveServer) -> list[str]:
    objects = encrypted_store(server, live_redis)
    d = Directory(live_redis)
    agent = await d.add_agent(Agent(name="desk", prompt="p", tenant=tenant_id))
    route = await d.attach("+15555550500", agent)
    store = sealing_calls(live_redis)
    ids = []
    for i in range(n):
        inbound = InboundCall(
            "twilio", f"CA{i:032d}", "AC1", f"+1555555{1000 + i}", "+15555550500", "ringing"
        )
        call_id, _, _ = await store.open_inbound(
            inbound,
            route,
            1_800_000_000.0 + i,
            {"carrier": "twilio", "region": "international", "country": "US", "reason": "r"},
        )
        if i % 2:
            await store.advance(call_id, "completed", 1_800_000_100.0 + i)
        ids.append(call_id)
    await write_transcript(objects, tenant_id, ids[0], [("caller", "hello there", 1_800_000_001.0)])
    return ids


async def test_list_filter_paginate_read_and_audited_transcript(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant_id, admin = await new_tenant(live_server, "A")
    ids = await seed(live_redis, tenant_id, 7, live_server)
    async with httpx.AsyncClient(base_url=live_server.url, headers=auth(admin)) as c:
        pages, cursor = [], None
        while True:
            r = await c.get(
                "/v1/calls", params={"limit": 3} | ({"cursor": cursor} if cursor else {})
            )
            assert r.status_code == 200, r.text
            pages.append([i["call_id"] for i in r.json()["items"]])
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert [i for p in pages for i in p] == list(reversed(ids))  # newest first, each once
        done = (await c.get("/v1/calls", params={"status": "completed"})).json()["items"]
        assert {i["call_id"] for i in done} == set(ids[1::2])
        mine = (await c.get("/v1/calls", params={"number": "+15555551002"})).json()["items"]
        assert [i["call_id"] for i in mine] == [ids[2]]
        assert (await c.get("/v1/calls", params={"direction": "outbound"})).json()["items"] == []
        detail = (await c.get(f"/v1/calls/{ids[0]}")).json()
        assert detail["routing"]["country"] == "US" and detail["events"][0]["type"] == "inbound"
        r = await c.get(f"/v1/calls/{ids[0]}/transcript", headers={"X-Request-ID": "read-1"})
        assert r.json()["turns"][0]["text"] == "hello there"
        audit = (await c.get("/v1/audit")).json()["items"]
        read = [e for e in audit if e["action"] == "transcript.read"]
        assert read and read[-1]["target"] == ids[0] and read[-1]["request_id"] == "read-1"
        assert read[-1]["key_id"] == admin.split("_")[1]


async def test_another_tenants_calls_are_404(live_server: LiveServer, live_redis: Redis) -> None:
    tenant_id, _ = await new_tenant(live_server, "A")
    ids = await seed(live_redis, tenant_id, 1, live_server)
    _, other = await new_tenant(live_server, "B")
    async with httpx.AsyncClient(base_url=live_server.url, headers=auth(other)) as c:
        for path in (f"/v1/calls/{ids[0]}", f"/v1/calls/{ids[0]}/transcript"):
            foreign, missing = (
                await c.get(path),
                await c.get(path.replace(ids[0], "call_000000000000000000000000")),
            )
            assert (
                foreign.status_code == missing.status_code == 404
                and foreign.json() == missing.json()
            )
        assert (await c.get("/v1/calls")).json()["items"] == []
    audit_b = await live_redis.xlen(f"audit:{tenant_id}")
    assert audit_b == 0  # nothing was read in A's name
