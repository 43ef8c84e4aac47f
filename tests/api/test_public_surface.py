"""What the public listener tells anyone: no metrics, no internal errors, no carrier's words."""

from __future__ import annotations

import asyncio
import json

import httpx
from aiohttp import web
from redis.asyncio import Redis

from carriers.simulation import LoopbackApi
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tests.helpers import auth, carrier_up, new_tenant

#: What a carrier's API says when it refuses: our own request echoed, with a caller's number.
CARRIER_WORDS = "Number +15555550177 is not allowed for account token-xyz-4242"


class RefusingApi(LoopbackApi):
    """A carrier REST API that refuses everything with a 400 and a wordy body."""

    def add_routes(self, app: web.Application) -> None:
        async def refuse(request: web.Request) -> web.Response:
            return web.json_response({"message": CARRIER_WORDS, "code": 21452}, status=400)

        app.router.add_route("*", "/{tail:.*}", refuse)


async def test_metrics_are_not_on_the_public_listener_but_on_their_own(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient() as c:
        public = await c.get(live_server.url + "/metrics")
        schema = (await c.get(live_server.url + "/openapi.json")).json()
        scraped = await c.get(live_server.metrics_url)
        other = await c.get(live_server.metrics_url.replace("/metrics", "/openapi.json"))
    assert public.status_code == 404
    assert "/metrics" not in schema["paths"]
    assert scraped.status_code == 200 and "bonmoniq_webhooks_total" in scraped.text
    assert other.status_code == 404  # the metrics listener serves nothing else


async def test_readyz_says_what_is_down_but_not_its_address_or_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_redis

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    redis_proc, redis_url = start_redis(tmp_path)
    server = start_server(redis_url, tmp_path, ready="/healthz", BONMONIQ_LLM_URL=dead)
    try:
        async with httpx.AsyncClient() as c:
            r = await c.get(server.url + "/readyz")
        assert r.status_code == 503
        body = r.json()
        assert (body["code"], body["title"]) == ("not_ready", "LLM unreachable")
        assert dead.split("//")[1].split("/")[0] not in r.text and "127.0.0.1" not in r.text
        assert body["detail"] == "the language model does not answer"
        # The operator finds the reason in the log.
        for _ in range(50):
            if "not ready" in server.log.read_text():
                break
            await asyncio.sleep(0.1)
        assert "LLM unreachable" in server.log.read_text()
    finally:
        stop_server(server)
        redis_proc.kill()
        redis_proc.wait()


async def test_a_carriers_refusal_reaches_the_client_as_a_code_not_its_words(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await new_tenant(live_server, "refused")
    await carrier_up(live_server, "twilio")
    await carrier_up(live_server, "telnyx")
    apis = [RefusingApi(live_server.twilio_api_port), RefusingApi(live_server.telnyx_api_port)]
    for api in apis:
        await api.__aenter__()
    try:
        async with httpx.AsyncClient(base_url=live_server.url) as c:
            r = await c.get("/v1/numbers/available", params={"country": "US"}, headers=auth(admin))
    finally:
        for api in apis:
            await api.__aexit__()
    assert r.status_code == 502, r.text
    assert r.json()["code"] == "carrier_api_error"
    assert "token-xyz-4242" not in r.text and "0177" not in r.text and "21452" not in r.text
    log = live_server.log.read_text()
    assert "token-xyz-4242" in log  # the operator reads what the carrier said
    assert "+15555550177" not in log  # with the number masked


def test_log_lines_mask_numbers_however_they_are_written() -> None:
    import logging

    from app.logs import JsonFormatter

    record = logging.LogRecord("carriers.rest", logging.WARNING, __file__, 1, "refused %s",
                               ("+33 1 85 00 12 34",), None)  # fmt: skip
    record.body = '{"to": "33612345678", "from": "+1 (555) 555-4202"}'  # a carrier's reply
    record.path = "/v1/numbers/+14155550100"
    line = JsonFormatter().format(record)
    for clear in ("85 00 12 34", "33612345678", "555-4202", "4155550100"):
        assert clear not in line, line
    assert line.count("+…") == 4 and json.loads(line)["msg"] == "refused +…34"
    # A browser caller's address is masked as a number is; the platform's own loopback is not.
    record = logging.LogRecord("aioice.ice", logging.WARNING, __file__, 1,
                               "pair %s -> %s failed, served on %s", ("203.0.113.77:5000",
                               "10.1.2.3", "127.0.0.1:8080"), None)  # fmt: skip
    msg = json.loads(JsonFormatter().format(record))["msg"]
    assert msg == "pair 203.0.…:5000 -> 10.1.… failed, served on 127.0.0.1:8080", msg
    record.args = ("[2001:db8::7]:5000", "10.1.2.3.", "[::1]:8080")
    msg = json.loads(JsonFormatter().format(record))["msg"]
    assert msg == "pair [2001:…]:5000 -> 10.1.…. failed, served on [::1]:8080", msg
