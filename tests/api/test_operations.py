"""Operations endpoints on a running platform: /metrics counts what happens, /readyz says why."""

from __future__ import annotations

import secrets

import httpx

from tests.conftest import LiveServer
from tests.helpers import scrape


async def test_metrics_count_webhook_results_by_carrier(live_server: LiveServer) -> None:
    key = 'bonmoniq_webhooks_total{carrier="twilio",result="refused_signature"}'
    before = (await scrape(live_server)).get(key, 0.0)
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        for _ in range(3):
            r = await c.post(
                "/webhooks/twilio/voice",
                data={"CallSid": "CA" + "0" * 32, "AccountSid": "AC" + "0" * 32},
                headers={"X-Twilio-Signature": "forged"},
            )
            assert r.status_code == 403
        metrics = await c.get(live_server.metrics_url)
    assert metrics.headers["content-type"].startswith("text/plain")
    after = await scrape(live_server)
    assert after[key] == before + 3
    assert "bonmoniq_active_calls" in after
    assert "# TYPE bonmoniq_pipeline_stage_seconds histogram" in metrics.text


async def test_readyz_says_models_loaded_and_llm_reachable(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body | {"carriers": {}, "sip_accounts": {}} == {
        "status": "ready",
        "models": "loaded",
        "llm": "reachable",
        "carriers": {},
        "sip_accounts": {},
    }
    assert set(body["carriers"]) == {"twilio", "telnyx", "sinch"}
    # SIP accounts by registration state, counts only (a customer's PBX never makes it unready)
    assert set(body["sip_accounts"]) >= {"registered", "registering", "rejected", "unreachable"}
    assert all(isinstance(n, int) for n in body["sip_accounts"].values())
    assert set(body["carriers"].values()) <= {"up", "down"}


async def test_http_requests_are_counted_by_route_template_never_by_raw_path(
    live_server: LiveServer,
) -> None:
    call_id = "call_" + secrets.token_hex(12)
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        assert (await c.get(f"/v1/calls/{call_id}")).status_code == 401  # no key
        assert (await c.get(f"/no/such/{call_id}")).status_code == 404
        assert (await c.get("/healthz")).status_code == 200
        metrics = (await c.get(live_server.metrics_url)).text
    families = await scrape(live_server)
    assert call_id not in metrics
    counted = 'bonmoniq_http_requests_total{method="GET",route="%s",status="%s"}'
    assert families[counted % ("/v1/calls/{call_id}", 401)] >= 1
    assert families[counted % ("other", 404)] >= 1
    assert families[counted % ("/healthz", 200)] >= 1
    timed = 'bonmoniq_http_request_seconds_count{method="GET",route="/v1/calls/{call_id}"}'
    assert families[timed] >= 1
    # Media streams are not HTTP requests; /metrics is on its own listener, not counted.
    assert not [k for k in families if 'route="/media/' in k or 'route="/metrics"' in k]


async def test_metrics_say_how_full_the_process_is_and_whether_it_drains(
    live_server: LiveServer,
) -> None:
    families = await scrape(live_server)
    assert families["bonmoniq_max_calls"] == 1000  # BONMONIQ_MAX_CALLS of the test server
    assert families["bonmoniq_draining"] == 0
    assert families["bonmoniq_calls_in_progress"] >= 0
