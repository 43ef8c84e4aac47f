"""An agent's announcement must hold the AI disclosure and the recording notice, per language."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import LiveServer
from tests.helpers import auth, new_tenant
from voice.announcement import DEFAULTS, REQUIRED, missing_parts

AGENT = {"name": "reception", "language": "en", "system_prompt": "You are a receptionist."}


@pytest.fixture
async def editor(live_server: LiveServer, live_redis: Redis) -> str:
    _, admin = await new_tenant(live_server, "A")
    return admin


@pytest.mark.parametrize(
    ("language", "announcement", "missing"),
    [
        ("en", ".", "ai_disclosure, recording_notice"),
        ("en", "Hello, thanks for calling.", "ai_disclosure, recording_notice"),
        ("en", "This call may be recorded.", "ai_disclosure"),
        ("en", "You are speaking with an AI assistant.", "recording_notice"),
        ("fr", ".", "ai_disclosure, recording_notice"),
        ("fr", DEFAULTS["en"], "ai_disclosure, recording_notice"),  # English, for French callers
        ("fr", "Bonjour, vous parlez avec une intelligence artificielle.", "recording_notice"),
    ],
)
async def test_an_incomplete_announcement_is_a_422_problem(
    live_server: LiveServer, editor: str, language: str, announcement: str, missing: str
) -> None:
    body = AGENT | {"language": language, "announcement": announcement}
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post("/v1/agents", json=body, headers=auth(editor))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "announcement_incomplete" and missing in r.json()["detail"]


async def test_a_patch_cannot_make_it_incomplete_and_the_default_follows_the_language(
    live_server: LiveServer, editor: str
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post("/v1/agents", json=AGENT | {"language": "fr"}, headers=auth(editor))
        assert r.status_code == 201, r.text
        agent = r.json()
        assert agent["announcement"] == DEFAULTS["fr"]
        url = f"/v1/agents/{agent['agent_id']}"
        r = await c.patch(url, json={"announcement": "."}, headers=auth(editor))
        assert r.status_code == 422 and r.json()["code"] == "announcement_incomplete", r.text
        r = await c.patch(url, json={"language": "en"}, headers=auth(editor))
        assert r.status_code == 200 and r.json()["announcement"] == DEFAULTS["en"], r.text
        own = "Hi! I am a virtual assistant and this call is recorded."
        r = await c.patch(url, json={"announcement": own}, headers=auth(editor))
        assert r.status_code == 200 and r.json()["announcement"] == own, r.text
        # An announcement of the agent's own survives a language change only if it fits.
        r = await c.patch(url, json={"language": "fr"}, headers=auth(editor))
        assert r.status_code == 422 and r.json()["code"] == "announcement_incomplete", r.text


@pytest.mark.parametrize("language", sorted(REQUIRED))
def test_every_language_has_a_default_that_passes(language: str) -> None:
    assert missing_parts(DEFAULTS[language], language) == ()
    assert missing_parts(".", language) == ("ai_disclosure", "recording_notice")
