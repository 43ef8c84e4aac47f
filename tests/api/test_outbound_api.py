"""``POST /v1/calls`` on a running platform: placing calls, the per-tenant limits under concurrent
requests, their settlement when calls end, and ``Idempotency-Key``. Telnyx's Call Control API is
played on loopback by its simulator, which records every dial the platform sends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from calls.store import CallStore
from carriers.base import StatusUpdate
from carriers.telnyx.simulator import FakeCallControl
from tests.conftest import TELNYX_API_KEY, LiveServer
from tests.helpers import FROM, auth, new_tenant, tenant_with_number


async def burst(server: LiveServer, key: str, n: int, **headers: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        return list(
            await asyncio.gather(
                *(
                    c.post(
                        "/v1/calls",
                        json={"from_number": FROM, "to": f"+1555555{7000 + i}"},
                        headers=auth(key) | headers,
                    )
                    for i in range(n)
                )
            )
        )


async def test_place_a_call_through_the_holding_carrier(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "A")
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port) as api:
        async with httpx.AsyncClient(base_url=live_server.url) as c:
            r = await c.post(
                "/v1/calls",
                json={
                    "from_number": FROM,
                    "to": "+1 555 555 0777",
                    "tenant_id": "ten_x",
                    "state": "completed",
                },
                headers=auth(admin),
            )
            assert r.status_code == 201, r.text
            call = r.json()
            assert r.headers["location"] == f"/v1/calls/{call['call_id']}"
            assert call["direction"] == "outbound" and call["to_number"] == "+15555550777"
            assert call["state"] == "queued" and call["carrier"] == "telnyx"
            assert call["routing"]["carrier"] == "telnyx"
            ccid, dial = await api.next_dial(5)
            assert dial["from"] == FROM and dial["to"] == "+15555550777"
            assert dial["stream_url"].endswith("/media/telnyx")
            audit = (await c.get("/v1/audit", headers=auth(admin))).json()["items"]
            assert ("call.place", call["call_id"]) in [(e["action"], e["target"]) for e in audit]
            # Not a number of the tenant: 422 with the reason, nothing dialled.
            r = await c.post(
                "/v1/calls",
                json={"from_number": "+15555550999", "to": "+15555550777"},
                headers=auth(admin),
            )
            assert r.status_code == 422 and r.json()["code"] == "route_refused"
    assert len([x for x in api.log if x[1] == "dial"]) == 1
    assert await CallStore(live_redis).by_carrier_id("telnyx", ccid) == call["call_id"]


async def test_concurrent_calls_cap_holds_under_a_burst(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(
        live_server,
        live_redis,
        "A",
        {"calls_per_minute": 100, "concurrent_calls": 3, "daily_spend_cents": 100000},
    )
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port) as api:
        responses = await burst(live_server, admin, 12)
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [429] * 9, [r.text for r in responses]
    refused = [r for r in responses if r.status_code == 429]
    assert all(
        r.json()["code"] == "limit_exceeded"
        and "concurrent_calls" in r.json()["detail"]
        and int(r.headers["retry-after"]) > 0
        for r in refused
    )
    assert len([x for x in api.log if x[1] == "dial"]) == 3  # no call placed beyond the cap


async def test_calls_per_minute_cap_holds_under_a_burst(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(
        live_server,
        live_redis,
        "A",
        {"calls_per_minute": 4, "concurrent_calls": 100, "daily_spend_cents": 100000},
    )
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port) as api:
        responses = await burst(live_server, admin, 10)
    assert sorted(r.status_code for r in responses) == [201] * 4 + [429] * 6
    retry = [int(r.headers["retry-after"]) for r in responses if r.status_code == 429]
    assert all(0 < s <= 60 for s in retry)
    assert len([x for x in api.log if x[1] == "dial"]) == 4


async def test_daily_spend_cap_reserves_and_settles(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant_id, admin = await tenant_with_number(
        live_server,
        live_redis,
        "A",
        {"calls_per_minute": 100, "concurrent_calls": 100, "daily_spend_cents": 100},
    )
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        limits = (await c.get("/v1/limits", headers=auth(admin))).json()
    per_call = limits["cents_reserved_per_call"]
    assert per_call > 0 and limits["daily_spend_cents"] == 100
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port) as api:
        responses = await burst(live_server, admin, 8)
        placed = [r.json()["call_id"] for r in responses if r.status_code == 201]
        assert len(placed) == 100 // per_call
        refused = [r for r in responses if r.status_code == 429]
        assert all("daily_spend" in r.json()["detail"] for r in refused)
        # Retry-After points at the next UTC midnight.
        assert all(0 < int(r.headers["retry-after"]) <= 86400 for r in refused)
        dials = [x for x in api.log if x[1] == "dial"]
        assert len(dials) == len(placed)
        # The first call ends after 61 s of talk: it costs two minutes; the rest is given back.
        store = CallStore(live_redis)
        ccid = (await store.get(placed[0])).carrier_call_id  # type: ignore[union-attr]
        await store.apply_status(
            "telnyx", StatusUpdate(ccid, "completed", duration_s=61.0), time.time()
        )
        async with httpx.AsyncClient(base_url=live_server.url) as c:
            usage = (await c.get("/v1/limits", headers=auth(admin))).json()["usage"]
        rate = per_call // 16  # the carrier's hard limit (900 s + 30 s) at the per-minute rate
        assert usage["open_calls"] == len(placed) - 1
        assert usage["spent_today_cents"] == per_call * (len(placed) - 1) + 2 * rate
        # A second final status (a carrier retry) settles nothing again.
        assert await store.settle(placed[0], time.time(), 0) is None
        # Room again for exactly one more call.
        again = await burst(live_server, admin, 3)
    assert sorted(r.status_code for r in again) == [201, 429, 429]
    assert tenant_id


async def test_a_failed_dial_gives_its_reservation_back(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(
        live_server,
        live_redis,
        "A",
        {"calls_per_minute": 100, "concurrent_calls": 1, "daily_spend_cents": 100000},
    )
    # Nothing answers on Telnyx's API port: the carrier is unreachable.
    first = await burst(live_server, admin, 1)
    assert first[0].status_code in (502, 503) and first[0].json()["code"].startswith("carrier")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        usage = (await c.get("/v1/limits", headers=auth(admin))).json()["usage"]
        calls = (await c.get("/v1/calls", headers=auth(admin))).json()["items"]
    assert usage["open_calls"] == 0 and usage["spent_today_cents"] == 0
    assert calls[0]["state"] == "failed"
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port):
        assert (await burst(live_server, admin, 1))[0].status_code == 201


async def test_idempotency_key_replays_the_first_response(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "A")
    body: dict[str, Any] = {"name": "idem", "system_prompt": "p"}
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        key = auth(admin) | {"Idempotency-Key": "7f6c1a52-agent"}
        first = await c.post("/v1/agents", json=body, headers=key)
        second = await c.post("/v1/agents", json=body, headers=key)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
        names = [
            a["name"] for a in (await c.get("/v1/agents", headers=auth(admin))).json()["items"]
        ]
        assert names.count("idem") == 1
        other = await c.post("/v1/agents", json=body | {"name": "other"}, headers=key)
        assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
        bad = await c.post(
            "/v1/agents", json=body, headers=auth(admin) | {"Idempotency-Key": "x" * 300}
        )
        assert bad.status_code == 400 and bad.json()["code"] == "idempotency_key_invalid"
        # A failure is not remembered: the same key works once the request is fixed.
        key2 = auth(admin) | {"Idempotency-Key": "retry-after-fix"}
        assert (await c.post("/v1/agents", json={"name": "x"}, headers=key2)).status_code == 422
        assert (
            await c.post("/v1/agents", json={"name": "x", "system_prompt": "p"}, headers=key2)
        ).status_code == 201
        # Another key's holder cannot read the response by reusing the Idempotency-Key.
        _, other_admin = await new_tenant(live_server, "B")
        theirs = await c.post(
            "/v1/agents",
            json=body,
            headers=auth(other_admin) | {"Idempotency-Key": "7f6c1a52-agent"},
        )
        assert theirs.status_code == 201 and theirs.json()["agent_id"] != first.json()["agent_id"]
        assert "idempotent-replayed" not in theirs.headers


async def test_concurrent_retries_of_one_call_place_it_once(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "A")
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port) as api:
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
            headers = auth(admin) | {"Idempotency-Key": "call-once"}
            body = {"from_number": FROM, "to": "+15555550777"}
            responses = await asyncio.gather(
                *(c.post("/v1/calls", json=body, headers=headers) for _ in range(6))
            )
            codes = [r.status_code for r in responses]
            assert codes.count(201) >= 1 and set(codes) <= {201, 409}
            assert all(
                r.json()["code"] == "idempotency_in_flight"
                for r in responses
                if r.status_code == 409
            )
            ids = {r.json()["call_id"] for r in responses if r.status_code == 201}
            later = await c.post("/v1/calls", json=body, headers=headers)
        assert later.status_code == 201 and {later.json()["call_id"]} == ids
    assert len([x for x in api.log if x[1] == "dial"]) == 1
