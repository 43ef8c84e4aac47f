"""A local Sinch: a Voice API v1 call into a running platform, as Sinch places it.

It signs the ICE callback (``application key:signature`` over the documented string), connects
the stream WebSocket the SVAML ``connectStream`` names (``connect``, then binary 16-bit PCM at
16 kHz both ways after the platform's ``answer``), sends ACE and DiCE, and serves the calling
API the platform hangs up through (``PATCH /calling/v1/calls/id/{callId}``) on loopback.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets
from aiohttp import web

from carriers.simulation import (
    RATE,
    Conversation,
    Heard,
    LoopbackApi,
    SimulationError,
    SimulationResult,
)
from carriers.sinch.media import dtmf_message
from carriers.sinch.signature import sign

STREAM_RATE = 16000


class SinchWire:
    """Sinch stream frames, from Sinch's side: binary PCM at 16 kHz, JSON commands."""

    def __init__(self) -> None:
        """Resampler states for both directions."""
        self._up: Any = None
        self._down: Any = None

    def encode(self, pcm: bytes) -> bytes:
        """20 ms of caller audio at 16 kHz."""
        out, self._up = audioop.ratecv(pcm, 2, 1, RATE, STREAM_RATE, self._up)
        return out

    def decode(self, raw: str | bytes) -> Heard:
        """Agent audio (binary) or a command (``clear``; ``heartbeat`` means nothing here)."""
        if isinstance(raw, bytes):
            pcm, self._down = audioop.ratecv(raw, 2, 1, STREAM_RATE, RATE, self._down)
            return Heard(audio=pcm)
        return Heard(clear=json.loads(raw).get("command") == "clear")

    def stop(self) -> None:
        """Sinch just closes the socket."""
        return None

    def key(self, digit: str) -> str:
        """One key as a keypad message (``carriers.sinch.media``: the shape is unconfirmed)."""
        return dtmf_message(digit)


class FakeCallingApi(LoopbackApi):
    """The calling API on loopback: SVAML PATCHed onto calls, custom callouts placed.

    ``patches`` and ``callouts`` hold each request (the call id and its body).
    """

    def __init__(self, app_key: str, app_secret: str, port: int) -> None:
        """Accept Basic ``app_key:app_secret`` on ``127.0.0.1:port``."""
        super().__init__(port)
        self.auth = "Basic " + base64.b64encode(f"{app_key}:{app_secret}".encode()).decode()
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.callouts: list[tuple[str, dict[str, Any]]] = []

    def add_routes(self, app: web.Application) -> None:
        """``PATCH /calling/v1/calls/id/{callId}`` and ``POST /calling/v1/callouts``."""
        app.router.add_patch("/calling/v1/calls/id/{call_id}", self._patch)
        app.router.add_post("/calling/v1/callouts", self._callout)

    async def _callout(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.auth:
            return web.json_response({"errorCode": 40100, "message": "Unauthorized"}, status=401)
        body = await request.json()
        if body.get("method") != "customCallout" or "ice" not in body.get("customCallout", {}):
            return web.json_response({"errorCode": 40001, "message": "Invalid"}, status=400)
        call_id = str(uuid.uuid4())
        self.callouts.append((call_id, body))
        return web.json_response({"callId": call_id})

    async def _patch(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.auth:
            return web.json_response({"errorCode": 40100, "message": "Unauthorized"}, status=401)
        self.patches.append((request.match_info["call_id"], await request.json()))
        return web.Response(status=204)


class SinchSimulator:
    """Plays Sinch's part of one inbound call against ``public_url``."""

    def __init__(
        self,
        public_url: str,
        app_key: str,
        app_secret: str,
        api_port: int,
        *,
        to: str,
        from_: str = "33612345678",
    ) -> None:
        """Call ``to`` through application ``app_key``; serve the calling API on ``api_port``."""
        self.public_url = public_url.rstrip("/")
        self.app_key = app_key
        self.app_secret = app_secret
        self.api = FakeCallingApi(app_key, app_secret, api_port)
        self.to = to
        self.from_ = from_
        self.call_id = str(uuid.uuid4())

    def body(self, event: str, **fields: Any) -> bytes:
        """A callback body as Sinch sends it."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "event": event,
            "callid": self.call_id,
            "timestamp": now,
            "version": 1,
            "applicationKey": self.app_key,
            **fields,
        }
        return json.dumps(body).encode()

    def sign(self, body: bytes, at: dt.datetime | None = None) -> dict[str, str]:
        """The headers Sinch sends with ``body``."""
        ts = (at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = urlsplit(self.public_url + "/webhooks/sinch").path
        signature = sign(self.app_secret, "POST", path, body, "application/json", ts)
        return {
            "authorization": f"application {self.app_key}:{signature}",
            "content-type": "application/json",
            "x-timestamp": ts,
        }

    async def deliver(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST one callback (signed now unless ``headers`` are given)."""
        async with httpx.AsyncClient(timeout=15) as c:
            return await c.post(
                self.public_url + "/webhooks/sinch",
                content=body,
                headers=headers or self.sign(body),
            )

    def ice(self) -> bytes:
        """The ICE of this call."""
        return self.body(
            "ice",
            cli=self.from_,
            to={"type": "did", "endpoint": self.to},
            domain="pstn",
            originationType="PSTN",
        )

    async def run(self, utterances: list[tuple[str, bytes]], **options: Any) -> SimulationResult:
        """Place the call; say each utterance after the agent has finished talking."""
        async with self.api:
            r = await self.deliver(self.ice())
            if r.status_code != 200:
                raise SimulationError(f"ICE answered {r.status_code}: {r.text[:200]}")
            svaml = r.json()
            action = svaml.get("action", {})
            if action.get("name") != "connectStream":
                raise SimulationError(f"the platform did not connect a stream: {svaml}")
            headers = {h["key"]: h["value"] for h in action.get("callHeaders", [])}
            result = SimulationResult(self.call_id, headers.get("call_id", ""), json.dumps(svaml))
            rate = action.get("streamingOptions", {}).get("sampleRate", STREAM_RATE)
            async with websockets.connect(action["destination"]["endpoint"], max_size=2**22) as ws:
                await ws.send(
                    json.dumps(
                        {
                            "command": "connect",
                            "version": 1,
                            "callId": self.call_id,
                            "applicationKey": self.app_key,
                            "codec": "PCM",
                            "sampleRate": rate,
                            "callHeaders": headers,
                        }
                    )
                )
                first = await asyncio.wait_for(ws.recv(), 15)
                if json.loads(first).get("command") != "answer":
                    raise SimulationError(f"expected answer, got {first!r}")
                await self.deliver(self.body("ace"))
                await Conversation(ws, SinchWire(), result).converse(
                    utterances,
                    options.get("greeting_timeout", 40.0),
                    options.get("reply_timeout", 40.0),
                    options.get("quiet_after_reply", 1.5),
                    tuple(options.get("inject", ())),
                    options.get("barge_in_after"),
                    options.get("dtmf"),
                )
            by_platform = any(c == self.call_id for c, _ in self.api.patches)
            reason = "CALLEEHANGUP" if by_platform else "CALLERHANGUP"
            await self.deliver(self.body("dice", reason=reason, result="ANSWERED", duration=10))
        return result
