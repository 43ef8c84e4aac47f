"""Matrices over the live OpenAPI schema: object-level authorisation (BOLA), roles, revoked and
expired keys, operator separation, mass assignment. Each matrix is built from ``/openapi.json``,
so a new endpoint that the tables do not cover fails here until it is added."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from integrations.endpoints import Endpoints
from integrations.outbox import Outbox
from integrations.sealed import Sealer
from recordings.keyring import KeyRing
from tests import privacy
from tests.conftest import (
    MASTER_KEY,
    OPERATOR_TOKEN,
    LiveServer,
)
from tests.helpers import auth, new_tenant, seed

#: The least role each tenant operation needs.
MIN_ROLE = {
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
    ("GET", "/v1/audit"): "viewer",
    ("GET", "/v1/limits"): "viewer",
    ("POST", "/v1/agents"): "editor",
    ("GET", "/v1/agents"): "viewer",
    ("GET", "/v1/agents/{agent_id}"): "viewer",
    ("PATCH", "/v1/agents/{agent_id}"): "editor",
    ("DELETE", "/v1/agents/{agent_id}"): "editor",
    ("GET", "/v1/numbers/available"): "viewer",
    ("POST", "/v1/numbers"): "editor",
    ("GET", "/v1/numbers"): "viewer",
    ("GET", "/v1/numbers/{number}"): "viewer",
    ("PATCH", "/v1/numbers/{number}"): "editor",
    ("DELETE", "/v1/numbers/{number}"): "editor",
    ("POST", "/v1/calls"): "editor",
    ("GET", "/v1/calls"): "viewer",
    ("GET", "/v1/calls/{call_id}"): "viewer",
    ("GET", "/v1/calls/{call_id}/transcript"): "viewer",
    ("POST", "/v1/calls/{call_id}/hangup"): "editor",
    ("POST", "/v1/calls/{call_id}/stop-recording"): "editor",
    ("POST", "/v1/calls/{call_id}/transfer"): "editor",
    ("GET", "/v1/calls/{call_id}/recording"): "viewer",
    ("DELETE", "/v1/calls/{call_id}/recording"): "editor",
    ("PUT", "/v1/calls/{call_id}/legal-hold"): "admin",
    ("POST", "/v1/data-subjects/export"): "admin",
    ("POST", "/v1/data-subjects/erase"): "admin",
    ("POST", "/v1/webhooks/endpoints"): "admin",
    ("GET", "/v1/webhooks/endpoints"): "viewer",
    ("GET", "/v1/webhooks/endpoints/{endpoint_id}"): "viewer",
    ("PATCH", "/v1/webhooks/endpoints/{endpoint_id}"): "admin",
    ("DELETE", "/v1/webhooks/endpoints/{endpoint_id}"): "admin",
    ("POST", "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret"): "admin",
    ("GET", "/v1/webhooks/deliveries"): "viewer",
    ("GET", "/v1/webhooks/deliveries/{delivery_id}"): "viewer",
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/replay"): "admin",
    ("GET", "/v1/tools/secret"): "viewer",
    ("POST", "/v1/tools/secret"): "admin",
    ("POST", "/v1/sip-accounts"): "admin",
    ("GET", "/v1/sip-accounts"): "viewer",
    ("GET", "/v1/sip-accounts/{account_id}"): "viewer",
    ("PATCH", "/v1/sip-accounts/{account_id}"): "admin",
    ("DELETE", "/v1/sip-accounts/{account_id}"): "admin",
    ("POST", "/v1/agents/{agent_id}/webrtc/tokens"): "editor",
    ("POST", "/v1/agents/{agent_id}/webrtc"): "editor",
}
#: Open to anyone, tenant or not.
PUBLIC = {
    ("GET", "/v1/subprocessors"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}
RANK = {"viewer": 0, "editor": 1, "admin": 2}
B_NUMBER = "+15555550801"
A_NUMBER = "+15555550802"
UNUSED_NUMBER = "+15555550899"


async def with_webhooks(server: LiveServer, redis: Redis, tenant: dict[str, str]) -> dict[str, str]:
    """``tenant`` (from ``seed``) with a webhook endpoint and one delivery queued for it."""
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            "/v1/webhooks/endpoints",
            json={"url": "https://hooks.example.com/in", "events": ["call.ended"]},
            headers=auth(tenant["admin"]),
        )
    assert r.status_code == 201, r.text
    privacy.SEEN.secrets.add(r.json()["secret"])
    sealer = Sealer(KeyRing(redis, MASTER_KEY))
    outbox = Outbox(redis, Endpoints(redis, sealer), sealer)
    delivery_id = await outbox.enqueue(
        tenant["tenant_id"], r.json()["endpoint_id"], "call.ended", tenant["call_id"], {}
    )
    return tenant | {"endpoint_id": r.json()["endpoint_id"], "delivery_id": delivery_id}


async def with_sip_account(server: LiveServer, tenant: dict[str, str]) -> dict[str, str]:
    """``tenant`` (from ``seed``) with a SIP account (its registrar: a closed loopback port)."""
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            "/v1/sip-accounts",
            json={"name": "pbx of B", "provider": "pbx", "registrar": "127.0.0.1", "port": 9,
                  "username": "200", "password": "sip-pw-of-b-0001", "agent_id": tenant["agent_id"]},
            headers=auth(tenant["admin"]),
        )  # fmt: skip
    assert r.status_code == 201, r.text
    privacy.SEEN.secrets.add("sip-pw-of-b-0001")
    return tenant | {"account_id": r.json()["account_id"]}


def missing_ids() -> dict[str, str]:
    """Ids of the right shape that name nothing."""
    return {"agent_id": "agt_" + secrets.token_hex(8), "number": UNUSED_NUMBER,
            "call_id": "call_" + secrets.token_hex(12), "key_id": secrets.token_hex(8),
            "endpoint_id": "whe_" + secrets.token_hex(8),
            "delivery_id": "dlv_" + secrets.token_hex(10),
            "account_id": "sip_" + secrets.token_hex(8)}  # fmt: skip


async def operations(server: LiveServer) -> set[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        schema = (await c.get("/openapi.json")).json()
    return {
        (m.upper(), p) for p, item in schema["paths"].items() for m in item if m != "parameters"
    }


def body_for(method: str, path: str, a: dict[str, str]) -> dict[str, Any] | None:
    """A valid body, so that a refusal cannot come from validation."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("PATCH", "/v1/agents/{agent_id}"): {"greeting": "Hello from A"},
        ("PATCH", "/v1/numbers/{number}"): {"agent_id": a["agent_id"]},
        ("PUT", "/v1/calls/{call_id}/legal-hold"): {"hold": True},
        ("PATCH", "/v1/webhooks/endpoints/{endpoint_id}"): {"description": "from A"},
        ("PATCH", "/v1/sip-accounts/{account_id}"): {"name": "from A"},
        ("POST", "/v1/agents/{agent_id}/webrtc"): {
            "sdp": "v=0\r\nm=audio 9 RTP/AVP 0\r\n",
            "type": "offer",
        },
    }
    return bodies.get((method, path))


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {path}: add it to the BOLA table"
    return path


def comparable(r: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    return r.status_code, r.headers.get("content-type", ""), r.json() if r.content else {}


async def test_bola_other_tenants_ids_are_the_same_404_as_missing_ones(
    live_server: LiveServer, live_redis: Redis
) -> None:
    a = await seed(live_server, live_redis, "A", A_NUMBER)
    b = await with_webhooks(
        live_server, live_redis, await seed(live_server, live_redis, "B", B_NUMBER)
    )
    b = await with_sip_account(live_server, b)
    ids = ("agent_id", "number", "call_id", "key_id", "endpoint_id", "delivery_id", "account_id")
    foreign = {k: b[k] for k in ids}
    missing = missing_ids()
    with_ids = sorted(
        (m, p) for m, p in await operations(live_server)
        if "{" in p and p.startswith("/v1/") and not p.startswith("/v1/operator/")
    )  # fmt: skip
    assert len(with_ids) >= 9
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        for method, path in with_ids:
            body = body_for(method, path, a)
            got_foreign = await c.request(
                method, fill(path, foreign), json=body, headers=auth(a["admin"])
            )
            got_missing = await c.request(
                method, fill(path, missing), json=body, headers=auth(a["admin"])
            )
            assert got_foreign.status_code == 404, (method, path, got_foreign.text)
            assert comparable(got_foreign) == comparable(got_missing), (method, path)
        # B's data is untouched and B still reads it.
        hb = auth(b["admin"])
        assert (await c.get(f"/v1/agents/{b['agent_id']}", headers=hb)).json()[
            "greeting"
        ] != "Hello from A"
        assert (await c.get(f"/v1/numbers/{B_NUMBER}", headers=hb)).json()["agent_id"] == b[
            "agent_id"
        ]
        assert (await c.get("/v1/audit", headers=auth(b["viewer"]))).status_code == 200
        pbx = await c.get(f"/v1/sip-accounts/{b['account_id']}", headers=hb)
        assert pbx.status_code == 200 and pbx.json()["name"] == "pbx of B"
        hook = await c.get(f"/v1/webhooks/endpoints/{b['endpoint_id']}", headers=hb)
        assert hook.json()["description"] == "" and hook.json()["enabled"]
        sent = await c.get(f"/v1/webhooks/deliveries/{b['delivery_id']}", headers=hb)
        assert sent.status_code == 200 and sent.json()["endpoint_id"] == b["endpoint_id"]
        listed = await c.get("/v1/webhooks/deliveries", headers=auth(a["admin"]))
        assert b["delivery_id"] not in {d["delivery_id"] for d in listed.json()["items"]}
        turns = (await c.get(f"/v1/calls/{b['call_id']}/transcript", headers=hb)).json()["turns"]
        assert turns[0]["text"] == "secret of B"
        # A's audit log shows no read of B's transcript; B's shows only B's own.
        a_log = (await c.get("/v1/audit", headers=auth(a["admin"]))).json()["items"]
        assert all(e["target"] != b["call_id"] for e in a_log)


async def test_role_matrix_and_operator_separation(
    live_server: LiveServer, live_redis: Redis
) -> None:
    a = await seed(live_server, live_redis, "A", A_NUMBER)
    ops = await operations(live_server)
    tenant_ops = {
        o
        for o in ops
        if o[1].startswith("/v1/") and not o[1].startswith("/v1/operator/") and o not in PUBLIC
    }
    assert tenant_ops == set(MIN_ROLE), "every tenant operation needs a row in MIN_ROLE"
    operator_ops = {o for o in ops if o[1].startswith("/v1/operator/")}
    assert operator_ops
    values = missing_ids() | {"tenant_id": a["tenant_id"]}
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        for (method, path), least in sorted(MIN_ROLE.items()):
            for role in ("viewer", "editor", "admin"):
                r = await c.request(method, fill(path, values), json={} if method in ("POST", "PATCH") else None,
                                    params={"country": "US"} if path.endswith("/available") else None,
                                    headers=auth(a[role]))  # fmt: skip
                if RANK[role] < RANK[least]:
                    assert r.status_code == 403 and r.json()["code"] == "forbidden", (
                        method,
                        path,
                        role,
                    )
                else:
                    assert r.status_code not in (401, 403), (method, path, role, r.text)
        for method, path in sorted(operator_ops):
            body = (
                {"name": "x"}
                if method == "POST"
                else {"calls_per_minute": 1, "concurrent_calls": 1, "daily_spend_cents": 1}
            )
            r = await c.request(method, fill(path, values), json=body, headers=auth(a["admin"]))
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", (method, path)
            ok = await c.request(
                method, fill(path, values), json=body, headers=auth(OPERATOR_TOKEN)
            )
            assert ok.status_code in (200, 201), (method, path, ok.text)
        # The operator's token is not a tenant key.
        assert (await c.get("/v1/agents", headers=auth(OPERATOR_TOKEN))).status_code == 401


@pytest.mark.parametrize("how", ["revoked", "expired"])
async def test_revoked_and_expired_keys_get_401_everywhere(
    live_server: LiveServer, live_redis: Redis, how: str
) -> None:
    _, admin = await new_tenant(live_server, "A")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        if how == "revoked":
            r = await c.post("/v1/keys", json={"role": "admin"}, headers=auth(admin))
            key = r.json()["api_key"]
            assert (
                await c.delete(f"/v1/keys/{r.json()['key_id']}", headers=auth(admin))
            ).status_code == 204
        else:
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
            key = (
                await c.post(
                    "/v1/keys",
                    json={"role": "admin", "expires_at": soon.isoformat()},
                    headers=auth(admin),
                )
            ).json()["api_key"]
            assert (await c.get("/v1/agents", headers=auth(key))).status_code == 200
            await asyncio.sleep(2)
        values = {
            "agent_id": "agt_x",
            "number": UNUSED_NUMBER,
            "call_id": "call_x",
            "key_id": "0" * 16,
            "endpoint_id": "whe_x",
            "delivery_id": "dlv_x",
            "account_id": "sip_x",
        }
        for method, path in sorted(MIN_ROLE):
            r = await c.request(method, fill(path, values), json={} if method in ("POST", "PATCH") else None,
                                params={"country": "US"}, headers=auth(key))  # fmt: skip
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (
                method,
                path,
            )


async def test_mass_assignment_changes_nothing_server_owned(
    live_server: LiveServer, live_redis: Redis
) -> None:
    a = await seed(live_server, live_redis, "A", A_NUMBER)
    b = await seed(live_server, live_redis, "B", B_NUMBER)
    owned = {"agent_id": b["agent_id"], "tenant_id": b["tenant_id"], "tenant": b["tenant_id"],
             "created_at": "2001-01-01T00:00:00Z", "updated_at": "2001-01-01T00:00:00Z"}  # fmt: skip
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        h = auth(a["admin"])
        made = await c.post(
            "/v1/agents", json={"name": "mass", "system_prompt": "p"} | owned, headers=h
        )
        assert made.status_code == 201
        agent = made.json()
        assert agent["agent_id"] != b["agent_id"] and not agent["created_at"].startswith("2001")
        patched = await c.patch(
            f"/v1/agents/{agent['agent_id']}", json={"greeting": "Hi"} | owned, headers=h
        )
        assert patched.status_code == 200 and patched.json()["agent_id"] == agent["agent_id"]
        assert patched.json()["created_at"] == agent["created_at"]
        assert agent["agent_id"] in {
            x["agent_id"] for x in (await c.get("/v1/agents", headers=h)).json()["items"]
        }
        assert agent["agent_id"] not in {
            x["agent_id"]
            for x in (await c.get("/v1/agents", headers=auth(b["admin"]))).json()["items"]
        }
        # A number: the tenant, carrier and routing are the server's.
        r = await c.patch(f"/v1/numbers/{A_NUMBER}", json={"agent_id": agent["agent_id"], "tenant": b["tenant_id"],
                          "carrier": "twilio", "number": B_NUMBER, "routing": {"carrier": "twilio"}}, headers=h)  # fmt: skip
        assert (
            r.status_code == 200
            and r.json()["number"] == A_NUMBER
            and r.json()["carrier"] == "telnyx"
        )
        assert (await c.get(f"/v1/numbers/{B_NUMBER}", headers=auth(b["admin"]))).json()[
            "agent_id"
        ] == b["agent_id"]
        # A key: role only.
        k = await c.post(
            "/v1/keys",
            json={"role": "viewer", "tenant_id": b["tenant_id"], "key_id": "f" * 16},
            headers=h,
        )
        assert k.status_code == 201 and k.json()["key_id"] != "f" * 16
        assert (await c.get("/v1/agents", headers=auth(k.json()["api_key"]))).json()["items"][0][
            "agent_id"
        ] in {agent["agent_id"], a["agent_id"]}
