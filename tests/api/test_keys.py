"""Tenants, API keys, roles and the audit log on a running platform."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys

import httpx
import pytest
from redis.asyncio import Redis

from recordings.keyring import KeyRing
from recordings.lifecycle import subject_key
from tenancy.audit import address_ref
from tests.conftest import MASTER_KEY, REPO, LiveServer
from tests.helpers import auth, new_tenant


async def test_cli_creates_a_tenant_whose_key_works(
    live_server: LiveServer, live_redis: Redis
) -> None:
    env = {
        **os.environ,
        "BONMONIQ_REDIS_URL": live_server.redis_url,
        "BONMONIQ_LOG_LEVEL": "WARNING",
        "BONMONIQ_VAR_DIR": str(live_server.log.parent),
        "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),  # the audit log's key
    }
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "tenants",
        "create",
        "Acme",
        "--json",
        "--concurrent-calls",
        "2",
    ]
    out = await asyncio.to_thread(
        subprocess.run, cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["tenant_id"].startswith("ten_") and created["api_key"].startswith("bmq_")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.get("/v1/keys", headers=auth(created["api_key"]))
        limits = (await c.get("/v1/limits", headers=auth(created["api_key"]))).json()
    assert r.status_code == 200 and [k["role"] for k in r.json()["items"]] == ["admin"]
    assert limits["concurrent_calls"] == 2 and limits["calls_per_minute"] == 10
    bad = await asyncio.to_thread(
        subprocess.run,
        [*cmd[:-1], "-1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "expected a whole number" in bad.stderr
    # Stored as a hash only: the secret appears nowhere in Redis.
    secret = created["api_key"].rsplit("_", 1)[1]
    for key in await live_redis.keys("*"):
        if await live_redis.type(key) == "hash":
            assert secret not in json.dumps(await live_redis.hgetall(key))


async def test_operator_endpoints_need_the_operator_token(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await new_tenant(live_server, "A")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        for headers in ({}, auth(admin), auth("wrong")):
            r = await c.post("/v1/operator/tenants", json={"name": "x"}, headers=headers)
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "unauthorized"


async def test_roles_revocation_and_expiry(live_server: LiveServer, live_redis: Redis) -> None:
    _, admin = await new_tenant(live_server, "A")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        keys = {}
        for role in ("editor", "viewer"):
            r = await c.post("/v1/keys", json={"role": role}, headers=auth(admin))
            assert r.status_code == 201 and r.json()["role"] == role
            keys[role] = r.json()
        for role in ("editor", "viewer"):
            h = auth(keys[role]["api_key"])
            assert (await c.get("/v1/keys", headers=h)).status_code == 403
            assert (await c.post("/v1/keys", json={"role": "viewer"}, headers=h)).json()[
                "code"
            ] == "forbidden"
            assert (await c.get("/v1/audit", headers=h)).status_code == 200
        listed = (await c.get("/v1/keys", headers=auth(admin))).json()["items"]
        assert len(listed) == 3 and all("api_key" not in k for k in listed)
        r = await c.delete(f"/v1/keys/{keys['viewer']['key_id']}", headers=auth(admin))
        assert r.status_code == 204
        r = await c.get("/v1/audit", headers=auth(keys["viewer"]["api_key"]))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
        short = (
            await c.post(
                "/v1/keys", json={"role": "viewer", "expires_at": soon}, headers=auth(admin)
            )
        ).json()
        assert (await c.get("/v1/audit", headers=auth(short["api_key"]))).status_code == 200
        await asyncio.sleep(2)
        assert (await c.get("/v1/audit", headers=auth(short["api_key"]))).status_code == 401
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
        r = await c.post(
            "/v1/keys", json={"role": "viewer", "expires_at": past}, headers=auth(admin)
        )
        assert r.status_code == 422
        assert (await c.post("/v1/keys", json={"role": "root"}, headers=auth(admin))).json()[
            "code"
        ] == "validation_error"


async def test_another_tenants_key_is_a_404_like_a_missing_one(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin_a = await new_tenant(live_server, "A")
    _, admin_b = await new_tenant(live_server, "B")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        b_key = (await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin_b))).json()
        foreign = await c.delete(f"/v1/keys/{b_key['key_id']}", headers=auth(admin_a))
        missing = await c.delete("/v1/keys/0123456789abcdef", headers=auth(admin_a))
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
        assert (
            await c.get("/v1/audit", headers=auth(b_key["api_key"]))
        ).status_code == 200  # untouched
        # Server-owned fields in the body change nothing.
        r = await c.post(
            "/v1/keys",
            json={"role": "viewer", "tenant_id": "ten_other", "key_id": "x", "revoked_at": 1},
            headers=auth(admin_a),
        )
        assert r.status_code == 201 and r.json()["key_id"] != "x" and r.json()["revoked_at"] is None
        ids_a = {
            k["key_id"] for k in (await c.get("/v1/keys", headers=auth(admin_a))).json()["items"]
        }
        assert r.json()["key_id"] in ids_a


async def test_audit_records_who_what_when_where_and_the_request(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "A")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        created = await c.post(
            "/v1/keys", json={"role": "editor"}, headers=auth(admin) | {"X-Request-ID": "req-123"}
        )
        assert created.headers["x-request-id"] == "req-123"
        revoked = await c.delete(f"/v1/keys/{created.json()['key_id']}", headers=auth(admin))
        page = (await c.get("/v1/audit", headers=auth(admin))).json()
    actions = [(e["action"], e["target"]) for e in page["items"]]
    assert actions == [
        ("key.create", created.json()["key_id"]),
        ("key.revoke", created.json()["key_id"]),
    ]
    first, second = page["items"]
    admin_id = admin.split("_")[1]
    assert (
        first["key_id"] == admin_id
        and first["request_id"] == "req-123"
        # from where: the address's keyed digest, never the address itself
        and first["address"]
        == address_ref(subject_key(KeyRing(live_redis, MASTER_KEY)), tenant, "127.0.0.1")
        and "127.0.0.1" not in json.dumps(page)
    )
    assert second["request_id"] == revoked.headers["x-request-id"]
    # Append-only: no route edits or deletes an entry.
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        for method in ("DELETE", "PUT", "PATCH"):
            r = await c.request(method, "/v1/audit", headers=auth(admin))
            assert r.status_code == 405


@pytest.mark.parametrize("path", ["/v1/keys", "/v1/audit"])
async def test_no_key_is_401_problem(live_server: LiveServer, path: str) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        r.json()["code"] == "unauthorized"
        and r.headers["content-type"] == "application/problem+json"
    )


async def test_openapi_and_docs_are_served(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        schema = (await c.get("/openapi.json")).json()
        assert (await c.get("/docs")).status_code == 200
    assert {
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/v1/audit",
        "/v1/operator/tenants",
        "/v1/subprocessors",
    } <= set(schema["paths"])
    assert not any(
        p.startswith("/webhooks") for p in schema["paths"]
    )  # carriers' doors are not API


async def test_a_tenant_cannot_lose_its_last_admin_key(
    live_server: LiveServer, live_redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        for _ in range(5):
            _, first = await new_tenant(live_server, "A")
            second = (await c.post("/v1/keys", json={"role": "admin"}, headers=auth(first))).json()
            first_id = first.split("_")[1]
            own = await c.delete(f"/v1/keys/{first_id}", headers=auth(first))
            assert own.status_code == 409 and own.json()["code"] == "own_key"
            # Two admins revoke each other at once: one of them stays.
            results = await asyncio.gather(
                c.delete(f"/v1/keys/{first_id}", headers=auth(second["api_key"])),
                c.delete(f"/v1/keys/{second['key_id']}", headers=auth(first)),
            )
            codes = sorted(r.status_code for r in results)
            assert codes in ([204, 401], [204, 409]), [r.text for r in results]
            usable = [
                k
                for k in (first, second["api_key"])
                if (await c.get("/v1/keys", headers=auth(k))).status_code == 200
            ]
            assert len(usable) == 1
