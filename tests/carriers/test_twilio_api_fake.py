"""The Twilio simulator's REST API on loopback: Basic auth, updates recorded, and a call's open
stream ended by ``Status=completed`` or new TwiML, as Twilio does (``stop``, then close)."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from carriers.twilio.simulator import FakeTwilioApi, TwilioWire
from llm.server import free_port

SID, TOKEN = "AC" + "b" * 32, "secret-token"
CALL = "CA" + "c" * 32


async def test_an_update_ends_the_open_stream_and_is_recorded() -> None:
    heard: list[str] = []
    closed = asyncio.Event()

    async def platform(ws: websockets.ServerConnection) -> None:  # the platform's media side
        try:
            async for message in ws:
                heard.append(str(message))
        finally:
            closed.set()

    port = free_port()
    async with websockets.serve(platform, "127.0.0.1", 0) as server:
        ws_port = server.sockets[0].getsockname()[1]
        async with FakeTwilioApi(SID, TOKEN, port) as api:
            ws = await websockets.connect(f"ws://127.0.0.1:{ws_port}")
            api.streams[CALL] = (ws, TwilioWire("MZ1"))
            url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{SID}/Calls/{CALL}.json"
            async with httpx.AsyncClient() as c:
                refused = await c.post(url, data={"Status": "completed"}, auth=(SID, "wrong"))
                assert refused.status_code == 401 and not closed.is_set()
                twiml = "<Response><Dial><Number>+15555550111</Number></Dial></Response>"
                r = await c.post(url, data={"Twiml": twiml}, auth=(SID, TOKEN))
                assert r.status_code == 200 and r.json()["sid"] == CALL
                await asyncio.wait_for(closed.wait(), 5)
                # A call without an open stream: recorded, nothing to end.
                r = await c.post(url, data={"Status": "completed"}, auth=(SID, TOKEN))
                assert r.json()["status"] == "completed"
            assert api.updates_of(CALL) == [{"Twiml": twiml}, {"Status": "completed"}]
    assert [json.loads(m)["event"] for m in heard] == ["stop"]


async def test_a_dial_is_recorded_and_given_a_call_sid() -> None:
    port = free_port()
    async with FakeTwilioApi(SID, TOKEN, port) as api:
        url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{SID}/Calls.json"
        form = {"From": "+15555550100", "To": "+15555550199", "Url": "https://x/answer"}
        async with httpx.AsyncClient() as c:
            bad = await c.post(url, data={"To": "+15555550199"}, auth=(SID, TOKEN))
            assert bad.status_code == 400
            r = await c.post(url, data=form, auth=(SID, TOKEN))
        assert r.status_code == 201 and r.json()["sid"].startswith("CA")
        sid, seen = await api.dials.get()
        assert sid == r.json()["sid"] and seen == form
