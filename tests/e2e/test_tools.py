"""End to end: the model calls the agent's HTTP tools in a real call (scripted LLM, Twilio).

The platform runs on the real speech models; the language model is the scripted server that
streams ``tool_calls`` as vLLM does. The tools' endpoint is a real HTTPS server on loopback
(trustme), allowed by the platform's egress allow-list, which checks every request's Standard
Webhooks signature with the ``standardwebhooks`` library and the tenant's tool secret.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from calls.events import CallEventType
from carriers.twilio.simulator import TwilioSimulator
from routing import Directory
from tests import privacy
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store
from tests.fakes.customer import Answer, CustomerEndpoint, Received
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import auth, hear, new_tenant, say, wait_closed, words

pytestmark = pytest.mark.slow

NUMBER = "+15555550711"
#: The order number the model looks up: searched for in Redis and the logs afterwards.
ORDER = "48152736"


def endpoint_answers(request: Received) -> Answer:
    """The customer's endpoint: ``/orders`` answers at once, ``/refunds`` too late."""
    if request.path == "/orders":
        return Answer.json({"status": "shipped", "arrives": "Tuesday"})
    return Answer(delay_s=4.0)  # beyond the tool's timeout


def the_model(body: dict[str, Any]) -> Reply:
    """The scripted model: looks the order up, then the refund; answers from the results."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        calls = {
            c["id"]: c["function"]["name"]
            for m in body["messages"]
            for c in m.get("tool_calls") or []
        }
        if calls[last["tool_call_id"]] == "find_order":
            return Reply.say("Your order has shipped and arrives on Tuesday.")
        return Reply.say("")  # a model with nothing to say after the failure
    # By the caller's turn (Whisper's words may vary): the order first, then the refund.
    asked = sum(1 for m in body["messages"] if m["role"] == "user")
    return Reply.call("find_order" if asked == 1 else "refund_status", order=ORDER)


async def shop(server: LiveServer, redis: Redis, endpoint: CustomerEndpoint) -> tuple[str, str]:
    """A tenant with a tool secret and an agent with two HTTP tools on ``NUMBER``."""
    tenant_id, admin = await new_tenant(server, "tool-shop")
    order = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post("/v1/tools/secret", headers=auth(admin))
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        privacy.SEEN.secrets.add(secret)
        r = await c.post(
            "/v1/agents",
            json={
                "name": "shop",
                "system_prompt": "You answer the phone for a shop.",
                "http_tools": [
                    {
                        "name": "find_order",
                        "description": "Where an order is.",
                        "url": endpoint.url("/orders"),
                        "parameters": order,
                        "timeout_s": 3.0,
                    },
                    {
                        "name": "refund_status",
                        "description": "Where a refund is.",
                        "url": endpoint.url("/refunds"),
                        "parameters": order,
                        "timeout_s": 1.0,
                    },
                ],
            },
            headers=auth(admin),
        )
        assert r.status_code == 201, r.text
    d = Directory(redis)
    agent = await d.get_agent_by_id(r.json()["agent_id"], tenant_id)
    await d.attach(NUMBER, agent, {"carrier": "twilio", "carrier_id": "PN1"})
    return tenant_id, secret


async def test_the_model_calls_the_customers_endpoint_in_a_call(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    customer: CustomerEndpoint,
    voice,
    whisper,
) -> None:  # type: ignore[no-untyped-def]
    """One call, two tools: a signed request and its answer; a slow endpoint, a polite line."""
    _, secret = await shop(scripted_server, scripted_redis, customer)
    customer.script(endpoint_answers)
    privacy.SEEN.words.add(ORDER)
    scripted_llm.script(the_model)
    store = call_store(scripted_server, scripted_redis)

    sim = TwilioSimulator(scripted_server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    question = say(voice, "Where is my order?")
    refund = say(voice, "And what about my refund?")
    # The filler, the tool and the answer leave short gaps: a reply is over after 3 s of quiet.
    result = await sim.run(
        [("order", question), ("refund", refund)], reply_timeout=20.0, quiet_after_reply=3.0
    )
    await wait_closed(store, result.call_id)

    # The endpoint got each call signed with the tenant's secret (checked by the library).
    received = customer.requests()
    assert [(r.method, r.path) for r in received] == [("POST", "/orders"), ("POST", "/refunds")], (
        [r["messages"][-1] for r in scripted_llm.chat_requests()],
        scripted_server.tail(60),
    )
    for r in received:
        wanted = {k: r.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        assert Webhook(secret).verify(r.body, wanted) == {"order": ORDER}

    # The model's request after the lookup carried the endpoint's answer.
    after = [
        r
        for r in scripted_llm.chat_requests()
        if r["messages"][-1]["role"] == "tool" and "shipped" in r["messages"][-1]["content"]
    ]
    assert after and "Tuesday" in after[0]["messages"][-1]["content"]

    # The caller heard the filler (voice/prompt.FILLER), then the answer, then the polite
    # sentence after the late refund (TOOL_TROUBLE): never silence.
    heard = hear(whisper, bytes(result.agent_audio)).lower()
    filler = heard.find("one moment")
    assert filler >= 0 and heard.find("tuesday") > filler, heard
    assert {"sorry", "information"} <= words(heard[heard.find("tuesday") :]), heard

    events = [e for e in await store.events(result.call_id) if e.type == CallEventType.TOOL_CALLED]
    assert [(e.data["name"], e.data["status"]) for e in events] == [
        ("find_order", "ok"),
        ("refund_status", "timeout"),
    ]
    assert all(set(e.data) == {"name", "duration_s", "status"} for e in events)
    assert ORDER not in json.dumps([e.data for e in events])
