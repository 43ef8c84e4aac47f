"""Destination classes on a running platform: premium, satellite and high-risk numbers are refused
(403 ``destination_refused``) until the operator allows the class for the tenant, which is
audited and shown in ``GET /v1/limits``; an EU territory's number never leaves through Telnyx."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from carriers.telnyx.simulator import FakeCallControl
from tests.conftest import OPERATOR_TOKEN, TELNYX_API_KEY, LiveServer
from tests.helpers import FROM, auth, tenant_with_number

PREMIUM = "+19002345678"
SATELLITE = "+881612345678"
REUNION = "+262262161234"
LIMITS = {"calls_per_minute": 100, "concurrent_calls": 100, "daily_spend_cents": 100000}


async def test_restricted_destinations_need_the_operators_allowance(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant_id, admin = await tenant_with_number(live_server, live_redis, "A", LIMITS)
    limits_url = f"/v1/operator/tenants/{tenant_id}/limits"
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port) as api:
        async with httpx.AsyncClient(base_url=live_server.url) as c:
            shown = (await c.get("/v1/limits", headers=auth(admin))).json()
            assert shown["allowed_destinations"] == []
            assert shown["cents_per_minute"]["premium_rate"] > shown["cents_per_minute"]["standard"]
            for to in (PREMIUM, SATELLITE, "+18765551234"):
                r = await c.post("/v1/calls", json={"from_number": FROM, "to": to},
                                 headers=auth(admin))  # fmt: skip
                assert r.status_code == 403, r.text
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["code"] == "destination_refused"
                assert to[2:] not in r.text  # the number is not echoed
            # An EU territory's number cannot leave through the US carrier holding FROM.
            r = await c.post("/v1/calls", json={"from_number": FROM, "to": REUNION},
                             headers=auth(admin))  # fmt: skip
            assert r.status_code == 422 and r.json()["code"] == "route_refused", r.text

            # The operator allows premium-rate numbers for this tenant.
            r = await c.put(limits_url, json=LIMITS | {"allowed_destinations": ["premium_rate"]},
                            headers=auth(OPERATOR_TOKEN))  # fmt: skip
            assert r.status_code == 200 and r.json()["allowed_destinations"] == ["premium_rate"]
            shown = (await c.get("/v1/limits", headers=auth(admin))).json()
            assert shown["allowed_destinations"] == ["premium_rate"]
            r = await c.post("/v1/calls", json={"from_number": FROM, "to": PREMIUM},
                             headers=auth(admin))  # fmt: skip
            assert r.status_code == 201, r.text
            assert r.json()["routing"]["destination"] == "premium_rate"
            assert (await api.next_dial(5))[1]["to"] == PREMIUM
            r = await c.post("/v1/calls", json={"from_number": FROM, "to": SATELLITE},
                             headers=auth(admin))  # fmt: skip
            assert r.status_code == 403

            # Limits set without the field keep the allowance; an empty list withdraws it.
            r = await c.put(limits_url, json=LIMITS, headers=auth(OPERATOR_TOKEN))
            assert r.json()["allowed_destinations"] == ["premium_rate"]
            r = await c.put(limits_url, json=LIMITS | {"allowed_destinations": []},
                            headers=auth(OPERATOR_TOKEN))  # fmt: skip
            assert r.status_code == 200 and r.json()["allowed_destinations"] == []
            r = await c.post("/v1/calls", json={"from_number": FROM, "to": PREMIUM},
                             headers=auth(admin))  # fmt: skip
            assert r.status_code == 403
            r = await c.put(limits_url, json=LIMITS | {"allowed_destinations": ["toll_fraud"]},
                            headers=auth(OPERATOR_TOKEN))  # fmt: skip
            assert r.status_code == 422

            # Every change is in the tenant's audit log, made by the operator.
            audit = (await c.get("/v1/audit", headers=auth(admin))).json()["items"]
            changes = [e for e in audit if e["action"] == "limits.set"]
            assert [e["key_id"] for e in changes] == ["operator"] * 4
            assert all(e["target"] == tenant_id for e in changes)
    assert len([x for x in api.log if x[1] == "dial"]) == 1
