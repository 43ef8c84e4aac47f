"""``/v1/webhooks``, ``/v1/tools/secret`` and the agents' tools on the live platform: secrets
shown once and sealed at rest, URLs checked, every change audited without secrets or query
strings, deliveries listed, filtered, paged and replayed."""

from __future__ import annotations

import json
from typing import Any

import httpx
from redis.asyncio import Redis

from integrations.endpoints import Endpoints
from integrations.outbox import Outbox
from integrations.sealed import Sealer
from recordings.keyring import KeyRing
from store import keys
from tests import privacy
from tests.conftest import MASTER_KEY, LiveServer
from tests.helpers import FROM, auth, new_tenant, tenant_with_number

TOKEN = "tok-7f3a9c1e5b2d4f60"  # in an endpoint's query string: never audited, never in clear
URL = f"https://hooks.example.invalid/in?token={TOKEN}"
privacy.SEEN.secrets.add(TOKEN)


async def audit_details(redis: Redis, tenant: str) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await redis.xrange(keys.audit(tenant))
    return [(f["action"], f["target"], json.loads(f["detail"])) for _, f in rows]


async def test_endpoints_secrets_shown_once_and_every_change_audited(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "hooks")
    h = auth(admin)
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        made = await c.post(
            "/v1/webhooks/endpoints",
            json={"url": URL, "events": ["call.ended", "call.ended"], "description": "CRM"},
            headers=h,
        )
        assert made.status_code == 201, made.text
        body = made.json()
        secret = body["secret"]
        privacy.SEEN.secrets.add(secret)
        assert secret.startswith("whsec_") and body["events"] == ["call.ended"]
        assert body["enabled"] and body["disabled_reason"] is None
        endpoint_id = body["endpoint_id"]
        one = (await c.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=h)).json()
        assert "secret" not in one and one["url"] == URL
        listed = (await c.get("/v1/webhooks/endpoints", headers=h)).json()["items"]
        assert [e["endpoint_id"] for e in listed] == [endpoint_id]
        patched = await c.patch(
            f"/v1/webhooks/endpoints/{endpoint_id}",
            json={"events": ["call.started", "recording.ready"], "enabled": False},
            headers=h,
        )
        assert patched.status_code == 200
        assert patched.json()["events"] == ["call.started", "recording.ready"]
        assert not patched.json()["enabled"]
        rotated = await c.post(f"/v1/webhooks/endpoints/{endpoint_id}/rotate-secret", headers=h)
        new_secret = rotated.json()["secret"]
        privacy.SEEN.secrets.add(new_secret)
        assert rotated.status_code == 200 and new_secret != secret
        # Refused: an address that is not public, an unknown event, a null field.
        for bad, code in (
            ({"url": "https://10.0.0.5/in", "events": ["call.ended"]}, "egress_refused"),
            ({"url": "https://[::1]/in", "events": ["call.ended"]}, "egress_refused"),
            ({"url": "https://x.example.invalid/in", "events": ["call.nope"]}, None),
            ({"url": "https://x.example.invalid/in", "events": []}, None),
        ):
            r = await c.post("/v1/webhooks/endpoints", json=bad, headers=h)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert code is None or r.json()["code"] == code
        r = await c.patch(f"/v1/webhooks/endpoints/{endpoint_id}", json={"url": None}, headers=h)
        assert r.status_code == 422
        # Server-owned fields in a body are ignored.
        owned = await c.post(
            "/v1/webhooks/endpoints",
            json={"url": "https://y.example.invalid/", "events": ["call.ended"],
                  "endpoint_id": "whe_mine", "secret": "whsec_AAAA", "disabled_reason": "x"},
            headers=h,
        )  # fmt: skip
        assert owned.status_code == 201 and owned.json()["endpoint_id"] != "whe_mine"
        privacy.SEEN.secrets.add(owned.json()["secret"])
        assert owned.json()["secret"] != "whsec_AAAA" and owned.json()["disabled_reason"] is None
        assert (
            await c.delete(f"/v1/webhooks/endpoints/{endpoint_id}", headers=h)
        ).status_code == 204
        assert (await c.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=h)).status_code == 404
        # The tools' secret: absent, made (shown once), then only its date.
        assert (await c.get("/v1/tools/secret", headers=h)).json() == {
            "exists": False,
            "created_at": None,
        }
        tools = await c.post("/v1/tools/secret", headers=h)
        assert tools.status_code == 201 and tools.json()["secret"].startswith("whsec_")
        privacy.SEEN.secrets.add(tools.json()["secret"])
        info = (await c.get("/v1/tools/secret", headers=h)).json()
        assert info["exists"] and info["created_at"] and "secret" not in info
    actions = [a for a, _, _ in await audit_details(live_redis, tenant)]
    for action in (
        "webhook_endpoint.create",
        "webhook_endpoint.update",
        "webhook_endpoint.rotate_secret",
        "webhook_endpoint.delete",
        "tools_secret.rotate",
    ):
        assert action in actions
    created = next(
        d for a, t, d in await audit_details(live_redis, tenant) if t == endpoint_id and d
    )
    assert created["host"] == "hooks.example.invalid"
    audit_text = json.dumps(await audit_details(live_redis, tenant))
    assert TOKEN not in audit_text and "whsec_" not in audit_text


async def test_deliveries_are_listed_filtered_paged_and_replayed(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "deliveries")
    h = auth(admin)
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        ids = []
        for n in range(2):
            r = await c.post(
                "/v1/webhooks/endpoints",
                json={"url": f"https://h{n}.example.invalid/in", "events": ["call.ended"]},
                headers=h,
            )
            privacy.SEEN.secrets.add(r.json()["secret"])
            ids.append(r.json()["endpoint_id"])
        sealer = Sealer(KeyRing(live_redis, MASTER_KEY))
        outbox = Outbox(live_redis, Endpoints(live_redis, sealer), sealer)
        made = [
            await outbox.enqueue(tenant, ids[n % 2], "call.ended", f"call_{n}", {})
            for n in range(5)
        ]
        page = (await c.get("/v1/webhooks/deliveries", params={"limit": 2}, headers=h)).json()
        assert [d["delivery_id"] for d in page["items"]] == made[::-1][:2]
        rest = await c.get(
            "/v1/webhooks/deliveries",
            params={"limit": 10, "cursor": page["next_cursor"]},
            headers=h,
        )
        assert [d["delivery_id"] for d in rest.json()["items"]] == made[::-1][2:]
        assert rest.json()["next_cursor"] is None
        mine = await c.get("/v1/webhooks/deliveries", params={"endpoint_id": ids[1]}, headers=h)
        assert {d["delivery_id"] for d in mine.json()["items"]} == {made[1], made[3]}
        delivered = await c.get(
            "/v1/webhooks/deliveries", params={"status": "delivered"}, headers=h
        )
        assert delivered.json()["items"] == []
        one = (await c.get(f"/v1/webhooks/deliveries/{made[0]}", headers=h)).json()
        assert one["webhook_id"].startswith("msg_") and "payload" not in one
        assert isinstance(one["attempt_log"], list)
        replayed = await c.post(f"/v1/webhooks/deliveries/{made[0]}/replay", headers=h)
        assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
        # Ids of another shape are refused before anything is looked up.
        for path in (
            "/v1/webhooks/deliveries/dlv_x:attempts",
            f"/v1/webhooks/deliveries/{made[0]}x",
            "/v1/webhooks/endpoints/whe_x:1",
            "/v1/webhooks/deliveries/dlv_0123456789abcdef0123/replay",
        ):
            method = "POST" if path.endswith("/replay") else "GET"
            r = await c.request(method, path, headers=h)
            assert r.status_code in (404, 422), (path, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
        r = await c.get("/v1/webhooks/deliveries/dlv_x:attempts", headers=h)
        assert r.status_code == 422
        assert replayed.json()["webhook_id"] == one["webhook_id"]
        await c.patch(f"/v1/webhooks/endpoints/{ids[0]}", json={"enabled": False}, headers=h)
        refused = await c.post(f"/v1/webhooks/deliveries/{made[0]}/replay", headers=h)
        assert refused.status_code == 409 and refused.json()["code"] == "endpoint_disabled"
    assert [a for a, _, _ in await audit_details(live_redis, tenant)].count(
        "webhook_delivery.replay"
    ) == 1


async def test_agents_take_http_tools_keypad_input_and_an_extraction_schema(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await new_tenant(live_server, "tools")
    h = auth(admin)
    lookup = {
        "name": "lookup_order",
        "description": "Find an order by its number",
        "url": "https://crm.example.invalid/orders",
        "method": "PUT",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        "timeout_s": 3,
    }
    schema = {"type": "object", "properties": {"reason": {"type": "string"}}}
    agent = {"name": "desk", "system_prompt": "Help.", "http_tools": [lookup],
             "dtmf": {"max_digits": 6, "terminator": "#", "timeout_s": 4},
             "transfer_mode": "warm", "extraction_schema": schema}  # fmt: skip
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        # HTTP tools need the tools secret first: the customer verifies their requests with it.
        missing = await c.post("/v1/agents", json=agent, headers=h)
        assert missing.status_code == 422 and missing.json()["code"] == "tools_secret_missing"
        plain = await c.post("/v1/agents", json={"name": "plain", "system_prompt": "p"}, headers=h)
        assert plain.status_code == 201
        r = await c.patch(
            f"/v1/agents/{plain.json()['agent_id']}", json={"http_tools": [lookup]}, headers=h
        )
        assert r.status_code == 422 and r.json()["code"] == "tools_secret_missing"
        assert (await c.get("/v1/tools/secret", headers=h)).json()["exists"] is False
        made_secret = await c.post("/v1/tools/secret", headers=h)
        privacy.SEEN.secrets.add(made_secret.json()["secret"])
        made = await c.post("/v1/agents", json=agent, headers=h)
        assert made.status_code == 201, made.text
        got = made.json()
        assert got["http_tools"] == [lookup | {"timeout_s": 3.0}]
        assert got["dtmf"] == {"max_digits": 6, "terminator": "#", "timeout_s": 4.0}
        assert got["transfer_mode"] == "warm" and got["extraction_schema"] == schema
        agent_id = got["agent_id"]
        read = (await c.get(f"/v1/agents/{agent_id}", headers=h)).json()
        assert read["http_tools"] == got["http_tools"] and read["dtmf"] == got["dtmf"]
        cleared = await c.patch(
            f"/v1/agents/{agent_id}", json={"dtmf": None, "extraction_schema": None}, headers=h
        )
        assert cleared.json()["dtmf"] is None and cleared.json()["extraction_schema"] is None
        assert cleared.json()["http_tools"] == got["http_tools"]
        for tools, code in (
            ([lookup | {"name": "transfer"}], "tool_name_reserved"),
            ([lookup, lookup], "duplicate_tool_names"),
            ([lookup | {"url": "https://10.0.0.5/x"}], "tool_url_refused"),
            ([lookup | {"url": "https://169.254.169.254/latest"}], "tool_url_refused"),
            ([lookup | {"parameters": {"type": "object", "properties": 5}}], "invalid_json_schema"),
        ):
            r = await c.patch(f"/v1/agents/{agent_id}", json={"http_tools": tools}, headers=h)
            assert r.status_code == 422 and r.json()["code"] == code, (code, r.text)
        r = await c.patch(
            f"/v1/agents/{agent_id}",
            json={"extraction_schema": {"type": "object", "required": 5}},
            headers=h,
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_json_schema"
        r = await c.patch(f"/v1/agents/{agent_id}", json={"dtmf": {"max_digits": 99}}, headers=h)
        assert r.status_code == 422
        for method in ("GET", "DELETE"):  # their arguments could not be signed
            r = await c.patch(
                f"/v1/agents/{agent_id}",
                json={"http_tools": [lookup | {"method": method}]},
                headers=h,
            )
            assert r.status_code == 422, r.text
        stored = await c.get(f"/v1/agents/{agent_id}", headers=h)
        assert stored.json()["http_tools"] == got["http_tools"]


async def test_a_failed_outbound_placement_queues_call_ended(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await tenant_with_number(live_server, live_redis, "placement")
    h = auth(admin)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        r = await c.post(
            "/v1/webhooks/endpoints",
            json={"url": "https://ended.example.invalid/in", "events": ["call.ended"]},
            headers=h,
        )
        privacy.SEEN.secrets.add(r.json()["secret"])
        # Nothing answers on Telnyx's API port: the carrier refuses the dial.
        placed = await c.post(
            "/v1/calls", json={"from_number": FROM, "to": "+15555557100"}, headers=h
        )
        assert placed.status_code in (502, 503), placed.text
        [call] = (await c.get("/v1/calls", headers=h)).json()["items"]
        assert call["state"] == "failed"
        [d] = (await c.get("/v1/webhooks/deliveries", headers=h)).json()["items"]
        assert (d["event"], d["call_id"]) == ("call.ended", call["call_id"])
