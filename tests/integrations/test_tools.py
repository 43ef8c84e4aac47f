"""HTTP tools on a real Redis (the tenant's sealed secret) against a real HTTPS endpoint: the
request is signed the Standard Webhooks way (verified with the ``standardwebhooks`` library),
and every failure comes back as an outcome the model can read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from integrations.egress import Egress
from integrations.sealed import Sealer
from integrations.secrets import ToolSecrets
from integrations.tools import ToolRunner
from recordings.keyring import KeyRing
from routing.directory import HttpTool
from store import keys
from tests import privacy
from tests.conftest import MASTER_KEY
from tests.fakes.customer import Answer

ORDER = {
    "type": "object",
    "properties": {
        "order": {"type": "string", "minLength": 4, "maxLength": 4},
        "days": {"type": "integer"},
    },
    "required": ["order"],
}


def runner(redis: Redis, ca: Any, allow: tuple[str, ...] = ("127.0.0.1",)) -> ToolRunner:
    secrets = ToolSecrets(redis, Sealer(KeyRing(redis, MASTER_KEY)))
    return ToolRunner(Egress(allow, ca_file=ca.pem_path), secrets, max_bytes=1024)


def tool(url: str, method: str = "POST", timeout_s: float = 2.0) -> HttpTool:
    return HttpTool("lookup_order", "Find an order", url, method, ORDER, timeout_s)


async def test_a_tool_call_is_signed_and_its_answer_goes_back(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    tools = runner(redis, tool_ca)
    secret, _ = await tools.secrets.rotate("t1", 1.0)
    privacy.SEEN.secrets.add(secret)
    customer.script(Answer.json({"status": "shipped", "eta": {"days": 2}}))
    got = await tools.run("t1", "call_1", tool(customer.url("/orders")), {"order": "1234"})
    assert got.ok and got.http_status == 200
    assert json.loads(got.result) == {"status": "shipped", "eta": {"days": 2}}
    [req] = customer.requests()
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    assert Webhook(secret).verify(req.body, req.headers) == {"order": "1234"}
    assert req.headers["bonmoniq-call-id"] == "call_1"
    # PATCH too: the arguments in the signed JSON body, never in the query string.
    customer.script(Answer(body=b"in stock", content_type="text/plain"))
    got = await tools.run("t1", "call_1", tool(customer.url("/stock"), "PATCH"), {"order": "0042"})
    assert got.ok and got.result == "in stock"
    [req] = customer.requests()
    assert req.method == "PATCH" and req.query == {}
    assert Webhook(secret).verify(req.body, req.headers) == {"order": "0042"}
    # Another tenant's secret does not verify: the tenant's own is used.
    other, _ = await runner(redis, tool_ca).secrets.rotate("t2", 1.0)
    privacy.SEEN.secrets.add(other)
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(req.body, req.headers)
    # The secret is sealed in Redis; only when it was made is in clear.
    stored = await redis.hgetall(keys.tools_secret("t1"))
    assert secret not in json.dumps(stored) and set(stored) == {"secret", "created_at"}


async def test_without_the_tenants_secret_no_tool_is_called_and_none_is_made(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    tools = runner(redis, tool_ca)
    customer.script()
    got = await tools.run("t3", "c", tool(customer.url("/orders")), {"order": "1234"})
    assert got.status == "refused" and "not set up" in got.result
    assert customer.requests() == []
    assert not (await tools.secrets.info("t3")).exists
    assert await redis.exists(keys.tools_secret("t3")) == 0


def test_tools_take_only_methods_with_a_signed_body() -> None:
    for method in ("GET", "DELETE", "HEAD"):
        with pytest.raises(ValueError, match="method"):
            tool("https://crm.example.invalid/x", method)
    assert tool("https://crm.example.invalid/x", "put").method == "PUT"


async def test_failures_are_outcomes_never_exceptions(
    redis: Redis, customer: Any, tool_ca: Any
) -> None:
    tools = runner(redis, tool_ca)
    privacy.SEEN.secrets.add((await tools.secrets.rotate("t1", 1.0))[0])
    url = customer.url("/orders")
    customer.script()
    bad = await tools.run("t1", "c", tool(url), {"order": "12"})
    assert bad.status == "error" and "order" in bad.result
    # A schema jsonschema cannot apply (a $ref to nowhere): a polite failure, never a crash.
    nowhere = {"type": "object", "properties": {"order": {"$ref": "#/$defs/missing"}}}
    broken = HttpTool("lookup_order", "Find", url, "POST", nowhere)
    unusable = await tools.run("t1", "c", broken, {"order": "1234"})
    assert unusable.status == "error" and "cannot be used" in unusable.result
    assert customer.requests() == []  # invalid arguments are not sent
    refused = await runner(redis, tool_ca, allow=()).run("t1", "c", tool(url), {"order": "1234"})
    assert refused.status == "refused" and customer.requests() == []
    customer.script(
        Answer(delay_s=2),
        Answer(status=503),
        Answer.redirect(customer.url("/moved")),
        Answer(body=b"y" * 5000, content_type="text/plain"),
    )
    slow = await tools.run("t1", "c", tool(url, timeout_s=0.5), {"order": "1234"})
    assert slow.status == "timeout" and "in time" in slow.result
    failing = await tools.run("t1", "c", tool(url), {"order": "1234"})
    assert (failing.status, failing.http_status) == ("http_error", 503)
    moved = await tools.run("t1", "c", tool(url), {"order": "1234"})
    assert moved.status == "http_error" and "redirect" in moved.result
    big = await tools.run("t1", "c", tool(url), {"order": "1234"})
    assert big.status == "too_large"
    assert [r.path for r in customer.requests()] == ["/orders"] * 4
    gone = await tools.run("t1", "c", tool("https://127.0.0.1:1/x"), {"order": "1234"})
    assert gone.status == "error" and not gone.ok
