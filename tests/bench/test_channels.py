"""The channel bench's callers (bench/channels.py) place real calls on the shared scripted server.

Its SIP caller (aiosipua UAC, PCMU RTP, the account registered at the bench's SIPp registrar)
and its WebRTC caller (aiortc, a token, Opus) each ask one question after the announcement:
the agent's answer is heard on the caller's side and the stored transcript has the question.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from bench.channels import SippRegistrar, sip_account, sip_call, webrtc_call
from routing import Agent, Directory
from tests.conftest import LiveServer
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import auth, new_tenant, say

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) missing"),
]
QUESTION = "What time do you open on Saturday?"
ANSWER = "We open at nine on Saturday morning."


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[SippRegistrar]:
    r = SippRegistrar(tmp_path)
    yield r
    r.stop()


async def caller_words(server: LiveServer, key: str, call_id: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, headers=auth(key)) as c:
        turns = (await c.get(f"/v1/calls/{call_id}/transcript")).json()["turns"]
    return " ".join(t["text"].lower() for t in turns if t["role"] == "caller")


async def test_the_bench_callers_are_answered_over_sip_and_webrtc(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    registrar: SippRegistrar,
    voice: Any,
) -> None:
    server = scripted_server
    tenant, key = await new_tenant(server, "bench-channels")
    agent = await Directory(scripted_redis).add_agent(
        Agent(name="bakery", prompt="You answer the bakery's phone.", tenant=tenant)
    )
    scripted_llm.script(lambda _body: Reply.say(ANSWER))
    lines = [(QUESTION, say(voice, QUESTION))]
    async with httpx.AsyncClient(base_url=server.url) as c:
        account_id = await sip_account(c, key, agent.agent_id, registrar)

    sip = await sip_call(server.sip_port, account_id, lines)
    assert sip.turns[0].first_agent_audio is not None, "no answer heard over SIP"
    async with httpx.AsyncClient(base_url=server.url, headers=auth(key)) as c:
        items = (await c.get("/v1/calls")).json()["items"]
    assert [i["carrier"] for i in items] == ["sip"]
    assert "saturday" in await caller_words(server, key, items[0]["call_id"])

    web = await webrtc_call(server.url, key, agent.agent_id, lines)
    assert web.turns[0].first_agent_audio is not None, "no answer heard over WebRTC"
    assert "saturday" in await caller_words(server, key, web.call_id)
