"""``/v1/agents`` on a running platform: CRUD, validation, roles, tenant isolation, audit."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import LiveServer
from tests.helpers import auth, new_tenant
from voice.phrasebook import phrases

AGENT = {"name": "reception", "language": "en", "system_prompt": "You are a receptionist."}


@pytest.fixture
async def tenant(live_server: LiveServer, live_redis: Redis) -> dict[str, str]:
    _, admin = await new_tenant(live_server, "A")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        viewer = (await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin))).json()[
            "api_key"
        ]
        editor = (await c.post("/v1/keys", json={"role": "editor"}, headers=auth(admin))).json()[
            "api_key"
        ]
    return {"admin": admin, "editor": editor, "viewer": viewer}


async def test_create_read_update_delete(live_server: LiveServer, tenant: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post("/v1/agents", json=AGENT, headers=auth(tenant["editor"]))
        assert r.status_code == 201, r.text
        agent = r.json()
        assert agent["agent_id"].startswith("agt_") and agent["retention_days"] == 180
        assert agent["recording"] is False and agent["tools"] == ["end_call"]
        assert "AI" in agent["announcement"]
        assert (
            await c.get(f"/v1/agents/{agent['agent_id']}", headers=auth(tenant["viewer"]))
        ).json() == agent
        listed = (await c.get("/v1/agents", headers=auth(tenant["viewer"]))).json()["items"]
        assert [a["agent_id"] for a in listed] == [agent["agent_id"]]
        r = await c.patch(f"/v1/agents/{agent['agent_id']}", json={"recording": True, "greeting": "Hi!", "name": "front-desk"},
                          headers=auth(tenant["editor"]))  # fmt: skip
        assert (
            r.status_code == 200
            and r.json()["recording"] is True
            and r.json()["name"] == "front-desk"
        )
        assert r.json()["system_prompt"] == AGENT["system_prompt"]  # untouched fields stay
        # The old name is free again, the new one is taken.
        assert (
            await c.post("/v1/agents", json=AGENT, headers=auth(tenant["editor"]))
        ).status_code == 201
        clash = await c.post(
            "/v1/agents", json=AGENT | {"name": "front-desk"}, headers=auth(tenant["editor"])
        )
        assert clash.status_code == 409 and clash.json()["code"] == "agent_exists"
        assert (
            await c.delete(f"/v1/agents/{agent['agent_id']}", headers=auth(tenant["editor"]))
        ).status_code == 204
        assert (
            await c.get(f"/v1/agents/{agent['agent_id']}", headers=auth(tenant["viewer"]))
        ).status_code == 404
        audit = (await c.get("/v1/audit", headers=auth(tenant["viewer"]))).json()["items"]
        assert [e["action"] for e in audit][-4:] == [
            "agent.create",
            "agent.update",
            "agent.create",
            "agent.delete",
        ]


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"retention_days": 181}, "retention_days"),
        ({"retention_days": 0}, "retention_days"),
        ({"language": "xx"}, "language"),
        ({"voice": "en_GB-nobody"}, "voice"),
        ({"voice": None}, "voice"),
        ({"tools": ["transfer"]}, "transfer_number"),
        ({"tools": ["fly"]}, "tools"),
        ({"announcement": ""}, "announcement"),
        ({"transfer_number": "12"}, "E.164"),
        ({"name": "bad name!"}, "name"),
    ],
)
async def test_invalid_agents_are_422_problems(
    live_server: LiveServer, tenant: dict[str, str], change: dict[str, object], detail: str
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post("/v1/agents", json=AGENT | change, headers=auth(tenant["editor"]))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    codes = ("validation_error", "invalid_number", "unknown_voice")
    assert r.json()["code"] in codes and detail in r.text


async def test_an_agent_speaks_a_voice_of_its_language(
    live_server: LiveServer, tenant: dict[str, str]
) -> None:
    editor = auth(tenant["editor"])
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        french = (
            await c.post("/v1/agents", json=AGENT | {"language": "fr"}, headers=editor)
        ).json()
        assert french["voice"] == "espeak-ng-fr"  # the language's default voice
        assert french["greeting"] == phrases("fr").say.greeting  # stored as it is said
        r = await c.post(
            "/v1/agents",
            json=AGENT | {"name": "r2", "language": "fr", "voice": "en_US-joe-medium"},
            headers=editor,
        )
        assert r.status_code == 422 and r.json()["code"] == "voice_language_mismatch"
        assert "espeak-ng-fr" in r.json()["detail"]  # the voices that would do
        english = (await c.post("/v1/agents", json=AGENT | {"name": "r3"}, headers=editor)).json()
        assert english["voice"] == "en_US-joe-medium"
        url = f"/v1/agents/{english['agent_id']}"
        # The voice follows a change of language, unless the change names one.
        moved = (await c.patch(url, json={"language": "de"}, headers=editor)).json()
        assert moved["language"] == "de" and moved["voice"] == "espeak-ng-de"
        assert moved["greeting"] == phrases("de").say.greeting
        r = await c.patch(url, json={"language": "it", "voice": "espeak-ng-de"}, headers=editor)
        assert r.status_code == 422 and r.json()["code"] == "voice_language_mismatch"
        r = await c.patch(url, json={"voice": "espeak-ng-en"}, headers=editor)
        assert r.status_code == 422  # German agent, English voice
        both = await c.patch(url, json={"language": "en", "voice": "espeak-ng-en"}, headers=editor)
        assert both.status_code == 200 and both.json()["voice"] == "espeak-ng-en"


async def test_announcement_cannot_be_emptied(
    live_server: LiveServer, tenant: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        agent = (
            await c.post(
                "/v1/agents", json=AGENT | {"recording": True}, headers=auth(tenant["editor"])
            )
        ).json()
        r = await c.patch(
            f"/v1/agents/{agent['agent_id']}",
            json={"announcement": "  "},
            headers=auth(tenant["editor"]),
        )
    assert r.status_code == 422 and "announcement" in r.json()["detail"]


async def test_viewers_cannot_write_and_other_tenants_see_404(
    live_server: LiveServer, tenant: dict[str, str]
) -> None:
    _, other_admin = await new_tenant(live_server, "B")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        assert (
            await c.post("/v1/agents", json=AGENT, headers=auth(tenant["viewer"]))
        ).status_code == 403
        agent = (await c.post("/v1/agents", json=AGENT, headers=auth(tenant["editor"]))).json()
        path = f"/v1/agents/{agent['agent_id']}"
        for method, body in (("GET", None), ("PATCH", {"greeting": "x"}), ("DELETE", None)):
            foreign = await c.request(method, path, json=body, headers=auth(other_admin))
            missing = await c.request(
                method, "/v1/agents/agt_0000000000000000", json=body, headers=auth(other_admin)
            )
            assert (
                foreign.status_code == missing.status_code == 404
                and foreign.json() == missing.json()
            )
        assert (await c.get("/v1/agents", headers=auth(other_admin))).json()["items"] == []
        # Server-owned fields in a body change nothing.
        r = await c.post("/v1/agents", json=AGENT | {"name": "x2", "agent_id": "agt_mine", "tenant": "other", "created_at": 1},
                         headers=auth(tenant["editor"]))  # fmt: skip
        assert r.status_code == 201 and r.json()["agent_id"] != "agt_mine"
        assert (
            await c.get(f"/v1/agents/{r.json()['agent_id']}", headers=auth(tenant["viewer"]))
        ).status_code == 200


async def test_an_agent_stored_with_another_language_s_voice_can_still_be_changed(
    live_server: LiveServer, live_redis: Redis
) -> None:
    """Agents made before voices had to match their language (or by an older CLI) kept the
    English voice; a change that names no voice moves them to the voice their calls use."""
    from routing import Agent, Directory

    tenant_id, admin = await new_tenant(live_server, "old-agents")
    old = Agent(name="ancien", prompt="p", language="fr", tenant=tenant_id)
    assert old.voice == "en_US-joe-medium"
    await Directory(live_redis).add_agent(old)
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.patch(
            f"/v1/agents/{old.agent_id}", json={"system_prompt": "q"}, headers=auth(admin)
        )
    assert r.status_code == 200, r.text
    assert r.json()["voice"] == "espeak-ng-fr" and r.json()["system_prompt"] == "q"
