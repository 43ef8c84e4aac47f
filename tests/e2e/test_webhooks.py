"""End to end: a real call ends and its signed ``call.ended`` reaches the customer's endpoint,
with the transcript, the summary and the fields the (scripted) model extracted, although the
endpoint failed at first and the platform was killed (SIGKILL) between the attempts.

The platform runs on the real speech models and the scripted OpenAI-compatible server; the
endpoint is a real HTTPS server on loopback (trustme) that verifies each delivery with the
``standardwebhooks`` library.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from carriers.twilio.simulator import TwilioSimulator
from routing import Directory
from store import keys
from tests import privacy
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LiveServer,
    call_store,
    scripted_env,
    start_server,
    stop_server,
)
from tests.fakes.customer import Answer, CustomerEndpoint, Received
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import auth, new_tenant, say, wait_closed

pytestmark = pytest.mark.slow

NUMBER = "+15555550721"
SUMMARY = "The caller wants a refund for an order and asked to be called back."
FIELDS = {"reason": "refund", "callback_requested": True}
SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "callback_requested": {"type": "boolean"}},
    "required": ["reason", "callback_requested"],
}
privacy.SEEN.words.add(SUMMARY)


def the_model(body: dict[str, Any]) -> Reply:
    """In the call: a short answer; after it: the summary, or the fields (response_format)."""
    if body.get("stream"):
        return Reply.say("I am sorry to hear that. We will call you back.")
    if body.get("response_format"):
        return Reply.say('{"reason": "refund", "callback_requested": true}')
    return Reply.say(SUMMARY)


async def until(check: Any, what: str, server: LiveServer, limit_s: float = 90) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}\n{server.tail(40)}"
        await asyncio.sleep(0.2)


async def test_call_ended_arrives_signed_with_summary_and_fields_across_a_kill(
    redis_server: str,
    scripted_llm: ScriptedLLM,
    tool_ca: Any,
    customer: CustomerEndpoint,
    tmp_path: Path,
    voice,
    whisper,
) -> None:  # type: ignore[no-untyped-def]
    url = redis_server.rsplit("/", 1)[0] + "/8"
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushdb()
    env = scripted_env(scripted_llm, tool_ca.pem_path)
    server = start_server(url, tmp_path, **env)
    failing = [True]

    def endpoint(request: Received) -> Answer:
        ended = b'"type":"call.ended"' in request.body
        return Answer(status=500) if failing[0] and ended else Answer(status=204, body=b"")

    def ended(requests: list[Received]) -> list[Received]:
        return [r for r in requests if b'"type":"call.ended"' in r.body]

    customer.script(endpoint)
    scripted_llm.script(the_model)
    try:
        tenant, admin = await new_tenant(server, "hooks-e2e")
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.post(
                "/v1/webhooks/endpoints",
                json={"url": customer.url("/hooks"), "events": ["call.started", "call.ended"]},
                headers=auth(admin),
            )
            assert r.status_code == 201, r.text
            secret = r.json()["secret"]
            privacy.SEEN.secrets.add(secret)
            r = await c.post(
                "/v1/agents",
                json={"name": "desk", "system_prompt": "You answer for a shop.",
                      "extraction_schema": SCHEMA},
                headers=auth(admin),
            )  # fmt: skip
            assert r.status_code == 201, r.text
        d = Directory(redis)
        agent = await d.get_agent_by_id(r.json()["agent_id"], tenant)
        await d.attach(NUMBER, agent, {"carrier": "twilio", "carrier_id": "PN1"})

        sim = TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
        line = say(voice, "I need a refund for my order, please call me back.")
        result = await sim.run([("refund", line)], reply_timeout=20.0)
        await wait_closed(call_store(server, redis), result.call_id)
        assert (await sim.status("completed", 7)).status_code in (200, 204)

        async def first_attempt() -> bool:
            return bool(ended(customer.requests()))

        await until(first_attempt, "the first attempt", server)
        ids = await redis.zrange(keys.tenant_deliveries(tenant), 0, -1)
        events = {i: await redis.hget(keys.delivery(i), "event") for i in ids}
        [delivery_id] = [i for i, e in events.items() if e == "call.ended"]
        # call.started went out when the media stream started, with the parties.
        [started] = [r for r in customer.requests() if r not in ended(customer.requests())]
        begun = Webhook(secret).verify(started.body, started.headers)
        assert begun["type"] == "call.started" and begun["data"]["call_id"] == result.call_id
        assert (begun["data"]["from"], begun["data"]["direction"]) == (sim.from_, "inbound")

        async def recorded() -> bool:
            return await redis.hget(keys.delivery(delivery_id), "attempts") not in (None, "0")

        await until(recorded, "the first attempt recorded", server)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        shutil.copy(server.log, tmp_path / "serve-killed.log")
        privacy.LOGS.append(tmp_path / "serve-killed.log")
        failing[0] = False
        server = start_server(url, tmp_path, **env)

        async def delivered() -> bool:
            return await redis.hget(keys.delivery(delivery_id), "status") == "delivered"

        await until(delivered, "the delivery after the restart", server)
        got = ended(customer.requests())
        assert len(got) >= 2
        assert len({r.headers["webhook-id"] for r in got}) == 1
        payload = Webhook(secret).verify(got[-1].body, got[-1].headers)
        assert payload == Webhook(secret).verify(got[0].body, got[0].headers)
        assert payload["type"] == "call.ended"
        data = payload["data"]
        assert data["call_id"] == result.call_id and data["state"] == "completed"
        assert (data["direction"], data["carrier"]) == ("inbound", "twilio")
        assert (data["from"], data["to"]) == (sim.from_, NUMBER)
        assert data["summary"] == SUMMARY and data["fields"] == FIELDS
        assert "extraction_error" not in data
        said = " ".join(t["text"] for t in data["transcript"] if t["role"] == "caller").lower()
        assert "refund" in said, data["transcript"]
        extraction = next(b for b in scripted_llm.requests if b.get("response_format"))
        assert "refund" in extraction["messages"][-1]["content"].lower()
        async with httpx.AsyncClient(base_url=server.url) as c:
            shown = (
                await c.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=auth(admin))
            ).json()
        assert (
            shown["status"] == "delivered" and shown["webhook_id"] == got[0].headers["webhook-id"]
        )
        codes = [a["status_code"] for a in shown["attempt_log"]]
        assert codes[0] == 500 and codes[-1] == 204
    finally:
        stop_server(server)
        await redis.aclose()
