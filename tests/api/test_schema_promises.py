"""The OpenAPI schema promises what the server enforces, and 405s say what is allowed."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from api.schema import PHONE_PATTERN
from tests.conftest import LiveServer
from tests.helpers import auth, new_tenant


async def schema_of(server: LiveServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        return (await c.get("/openapi.json")).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/agents", {"GET", "POST"}),
        ("OPTIONS", "/v1/agents/agt_0123456789abcdef", {"GET", "PATCH", "DELETE"}),
        ("PUT", "/v1/numbers/+15555550100", {"GET", "PATCH", "DELETE"}),
        ("PATCH", "/v1/numbers/available", {"GET"}),
        ("OPTIONS", "/healthz", {"GET"}),
    ],
)
async def test_a_method_not_served_is_405_with_every_allowed_method(
    live_server: LiveServer, method: str, path: str, allowed: set[str]
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.request(method, path)
    assert r.status_code == 405, r.text
    assert r.json()["code"] == "method_not_allowed"
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


async def test_numbers_voices_and_languages_are_constrained_in_the_schema(
    live_server: LiveServer,
) -> None:
    schema = await schema_of(live_server)
    parts = schema["components"]["schemas"]
    agent = parts["AgentFields"]["properties"]
    assert "en_US-joe-medium" in agent["voice"]["enum"]  # the voice the CPU profile installs
    assert "en" in agent["language"]["enum"] and "xx" not in agent["language"]["enum"]
    assert agent["retention_days"]["minimum"] == 1 and agent["retention_days"]["maximum"] == 180
    for model, field in [("NumberCreate", "number"), ("CallCreate", "to"),
                         ("CallCreate", "from_number"), ("PhoneSubject", "phone_number")]:  # fmt: skip
        assert parts[model]["properties"][field]["pattern"] == PHONE_PATTERN
    param = schema["paths"]["/v1/numbers/{number}"]["get"]["parameters"]
    assert any(p["name"] == "number" and p["schema"]["pattern"] == PHONE_PATTERN for p in param)
    assert re.match(PHONE_PATTERN, "+1 (555) 555-0100") and not re.match(PHONE_PATTERN, "0")


async def test_what_the_schema_allows_is_accepted(live_server: LiveServer) -> None:
    _, admin = await new_tenant(live_server, "promises")
    schema = await schema_of(live_server)
    voice = schema["components"]["schemas"]["AgentFields"]["properties"]["voice"]["enum"][0]
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        # JSON Schema's integer includes 30.0; a formatted number is an E.164 number.
        r = await c.post(
            "/v1/agents",
            json={
                "name": "promised",
                "system_prompt": "p",
                "voice": voice,
                "retention_days": 30.0,
                "transfer_number": "+1 (555) 555-0100",
            },  # fmt: skip
            headers=auth(admin),
        )
        assert r.status_code == 201, r.text
        assert r.json()["retention_days"] == 30
        assert r.json()["transfer_number"] == "+15555550100"
        refused = await c.post(
            "/v1/agents",
            json={"name": "refused", "system_prompt": "p", "retention_days": "30"},
            headers=auth(admin),
        )
    assert refused.status_code == 422  # a string is not an integer, as the schema says
