"""Operations endpoints on a running platform: /metrics counts what happens, /readyz says why."""

from __future__ import annotations

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
    assert body | {"carriers": {}} == {
        "status": "ready",
        "models": "loaded",
        "llm": "reachable",
        "carriers": {},
    }
    assert set(body["carriers"]) == {"twilio", "telnyx", "sinch"}
    assert set(body["carriers"].values()) <= {"up", "down"}
