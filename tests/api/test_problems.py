"""Typed errors of the packages reach clients as the same problem+json codes.

A stored object that cannot be decrypted and a state store that does not answer: on a running
platform and, for the outage, on the app factory with a Redis nobody listens on. An error of the
platform itself is a 500 problem that keeps its message for the log.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import APIRouter
from redis.asyncio import Redis

from api import routes_keys
from api.app import create_app
from api.problems import INTERNAL_DETAIL, MEDIA_TYPE
from calls.errors import CallStoreIncomplete
from routing.destinations import default_table
from tenancy.audit import AuditLog
from tenancy.limits import Limits, OutboundLimiter
from tenancy.tenants import TenantStore
from tenancy.write_limits import WriteLimiter
from tests.conftest import LiveServer, encrypted_store, free_port
from tests.helpers import a_call, agent_with_number, auth, new_tenant


async def readiness() -> dict[str, Any]:
    return {"status": "ready"}


async def test_a_recording_missing_from_storage_is_409_recording_unreadable(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "unreadable")
    objects = encrypted_store(live_server, live_redis)
    route = await agent_with_number(live_redis, tenant, "desk", "+15555550321", 30)
    call_id = await a_call(live_redis, objects, route, "+15555552021", time.time())
    [recording] = await objects.of_call(call_id, "recording")
    await objects.storage.delete(recording.name)  # its metadata stays: the content is gone
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.get(f"/v1/calls/{call_id}/recording", headers=auth(admin))
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == MEDIA_TYPE
    assert r.json()["code"] == "recording_unreadable"


async def test_a_state_store_outage_is_503_state_store_unavailable() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)

    keys_router = routes_keys.router(
        tenants=TenantStore(dead),
        audit=AuditLog(dead, b"\x00" * 32),
        writes=WriteLimiter(dead, 30),
        limiter=OutboundLimiter(dead, 2, 14400),
        destinations=default_table(),
        default_limits=Limits(10, 5, 1000),
    )
    app = create_app([keys_router], dead, readiness)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://platform") as c:
            r = await c.get("/v1/keys", headers=auth("bmq_" + "0" * 16 + "_" + "a" * 43))
    finally:
        await dead.aclose()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == MEDIA_TYPE
    assert r.json()["code"] == "state_store_unavailable"


async def test_an_error_of_the_platform_is_a_500_problem_without_its_message() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    broken = APIRouter()

    @broken.get("/v1/broken")
    async def fails() -> None:
        raise CallStoreIncomplete("this call store has no key ring")

    transport = httpx.ASGITransport(app=create_app([broken], dead, readiness))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://platform") as c:
            r = await c.get("/v1/broken")
    finally:
        await dead.aclose()
    assert r.status_code == 500 and r.headers["content-type"] == MEDIA_TYPE
    assert r.json()["code"] == "call_store_incomplete"
    assert r.json()["detail"] == INTERNAL_DETAIL and "key ring" not in r.text
