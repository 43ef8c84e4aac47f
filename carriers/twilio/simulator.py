"""A local Twilio: places a call into a running platform exactly as Twilio would.

Signed voice webhook, then the Media Streams WebSocket (signed upgrade, ``connected`` and
``start``, 20 ms mu-law frames in real time, ``stop``). It records what the agent says and
times, per turn, the gap from the end of the caller's speech to the first agent audio. With
an API port it also serves Twilio's REST API the platform calls (:class:`FakeTwilioApi`).
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import contextlib
import json
import secrets
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import websockets
from aiohttp import web

from carriers.simulation import (
    Conversation,
    Heard,
    Keys,
    LoopbackApi,
    SimulationError,
    SimulationResult,
)
from carriers.twilio.signature import SIGNATURE_HEADER, compute_signature


class TwilioWire:
    """Media Streams messages, from Twilio's side."""

    def __init__(self, stream_sid: str) -> None:
        """Messages of stream ``stream_sid``."""
        self.stream_sid = stream_sid
        self.seq = 2  # connected and start came first
        self.chunk = 0

    def encode(self, pcm: bytes) -> str:
        """One ``media`` message of mu-law audio."""
        self.seq += 1
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(self.seq),
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(self.chunk * 20),
                    "payload": base64.b64encode(audioop.lin2ulaw(pcm, 2)).decode(),
                },
                "streamSid": self.stream_sid,
            }
        )

    def decode(self, raw: str | bytes) -> Heard:
        """Agent audio, ``clear``, or a ``mark`` to echo once the audio before it has played."""
        msg: dict[str, Any] = json.loads(raw)
        event = msg.get("event")
        if event == "media":
            return Heard(audio=audioop.ulaw2lin(base64.b64decode(msg["media"]["payload"]), 2))
        if event == "clear":
            return Heard(clear=True)
        if event == "mark":
            echo = {"event": "mark", "streamSid": self.stream_sid, "mark": msg.get("mark", {})}
            return Heard(played_reply=json.dumps(echo))
        return Heard()

    def key(self, digit: str) -> str:
        """A ``dtmf`` message: one key pressed by the caller."""
        self.seq += 1
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(self.seq),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self) -> str:
        """The ``stop`` message."""
        self.seq += 1
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(self.seq),
                "stop": {"accountSid": "", "callSid": ""},
                "streamSid": self.stream_sid,
            }
        )


class FakeTwilioApi(LoopbackApi):
    """Twilio's REST API (2010-04-01) on loopback: Basic auth, calls updated and placed.

    As Twilio does, ``Status=completed`` or a new ``Twiml``/``Url`` on a call whose media
    stream is open ends that stream: ``stop``, then the socket closes. ``updates`` and
    ``dials`` hold every request's form as sent (a field repeated: its last value).
    """

    def __init__(self, account_sid: str, auth_token: str, port: int) -> None:
        """Accept Basic ``account_sid:auth_token`` on ``127.0.0.1:port``."""
        super().__init__(port)
        self.account_sid = account_sid
        self.auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.dials: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
        self.dialled: list[tuple[str, dict[str, str]]] = []
        #: CallSid -> the open stream's socket and its wire (registered by the simulator).
        self.streams: dict[str, tuple[websockets.ClientConnection, TwilioWire]] = {}

    def add_routes(self, app: web.Application) -> None:
        """``POST .../Calls.json`` (dial) and ``POST .../Calls/{CallSid}.json`` (update)."""
        root = f"/2010-04-01/Accounts/{self.account_sid}"
        app.router.add_post(f"{root}/Calls.json", self._dial)
        app.router.add_post(f"{root}/Calls/{{sid}}.json", self._update)

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != self.auth:
            body = {"code": 20003, "message": "Authenticate", "status": 401}
            return web.json_response(body, status=401)
        return None

    async def _update(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        sid = request.match_info["sid"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.updates.append((sid, form))
        ends = form.get("Status") == "completed" or "Twiml" in form or "Url" in form
        if ends and sid in self.streams:
            ws, wire = self.streams.pop(sid)
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(wire.stop())
            await ws.close()
        status = "completed" if form.get("Status") == "completed" else "in-progress"
        return web.json_response({"sid": sid, "account_sid": self.account_sid, "status": status})

    async def _dial(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not form.get("To") or not form.get("From") or not form.get("Url"):
            body = {"code": 21205, "message": "To, From and Url are required", "status": 400}
            return web.json_response(body, status=400)
        sid = "CA" + secrets.token_hex(16)
        self.dialled.append((sid, form))
        await self.dials.put((sid, form))
        return web.json_response(
            {"sid": sid, "account_sid": self.account_sid, "status": "queued"}, status=201
        )

    def updates_of(self, call_sid: str) -> list[dict[str, str]]:
        """The updates the platform posted for ``call_sid``, in order."""
        return [form for sid, form in self.updates if sid == call_sid]


class TwilioSimulator:
    """Plays Twilio's part of one call against ``public_url``."""

    def __init__(
        self,
        public_url: str,
        account_sid: str,
        auth_token: str,
        *,
        to: str,
        from_: str = "+15555550123",
        base_url: str | None = None,
        api_port: int | None = None,
    ) -> None:
        """Call ``to`` at the platform whose public address is ``public_url``.

        ``base_url`` is where requests really go when it differs from the public address
        (a platform behind a reverse proxy); signatures always cover the public URL. With
        ``api_port`` the simulator serves Twilio's REST API there (``self.api``) while a call
        runs, or for an ``async with sim.api:`` block.
        """
        self.public_url = public_url.rstrip("/")
        self.base_url = (base_url or public_url).rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.to = to
        self.from_ = from_
        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.api = FakeTwilioApi(account_sid, auth_token, api_port) if api_port else None

    def voice_params(self) -> dict[str, str]:
        """The form Twilio posts to the voice webhook for an incoming call."""
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_,
            "To": self.to,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    async def post_signed(self, path: str, params: dict[str, str]) -> httpx.Response:
        """POST a form to ``path`` signed for the public URL, as Twilio does."""
        sig = compute_signature(self.public_url + path, list(params.items()), self.auth_token)
        async with httpx.AsyncClient(timeout=15) as client:
            return await client.post(
                self.base_url + path, data=params, headers={SIGNATURE_HEADER: sig}
            )

    async def status(self, status: str, sequence: int) -> httpx.Response:
        """Send a call status callback."""
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "CallStatus": status,
            "SequenceNumber": str(sequence),
        }
        return await self.post_signed("/webhooks/twilio/status", params)

    async def run(
        self,
        utterances: list[tuple[str, bytes]],
        *,
        greeting_timeout: float = 40.0,
        reply_timeout: float = 40.0,
        quiet_after_reply: float = 1.5,
        inject: tuple[str | bytes, ...] = (),
        barge_in_after: float | None = None,
        dtmf: Keys | None = None,
    ) -> SimulationResult:
        """Place the call and say each ``(label, pcm8k)`` after the agent has finished talking.

        ``inject`` is sent raw once the greeting is over (tests use it for malformed messages).
        With ``barge_in_after``, each line but the last is followed by the next one that many
        seconds after the agent starts answering: the caller talks over the agent. ``dtmf``
        presses keys (``carriers.simulation.Keys``).
        """
        options = {
            "greeting_timeout": greeting_timeout,
            "reply_timeout": reply_timeout,
            "quiet_after_reply": quiet_after_reply,
            "inject": inject,
            "barge_in_after": barge_in_after,
            "dtmf": dtmf,
        }
        async with contextlib.AsyncExitStack() as stack:
            if self.api is not None:
                await stack.enter_async_context(self.api.opened())
            r = await self.post_signed("/webhooks/twilio/voice", self.voice_params())
            if r.status_code != 200:
                raise SimulationError(f"voice webhook answered {r.status_code}: {r.text[:200]}")
            return await self._stream(r.text, utterances, options)

    async def answer_outbound(
        self, utterances: list[tuple[str, bytes]], **options: Any
    ) -> SimulationResult:
        """Be the far end of an outbound call the platform dials (``self.api`` must serve).

        Twilio fetches the answered call's TwiML from the dial's ``Url`` (signed POST), then
        streams; when the stream ends, the ``completed`` status callback follows.
        """
        if self.api is None:
            raise SimulationError("an outbound call needs the simulator's API port")
        self.call_sid, dial = await asyncio.wait_for(self.api.dials.get(), 30)
        self.from_, self.to = dial["From"], dial["To"]
        answer_url = dial["Url"]
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_,
            "To": self.to,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }
        sig = compute_signature(answer_url, list(params.items()), self.auth_token)
        target = answer_url.replace(self.public_url, self.base_url, 1)
        async with httpx.AsyncClient(timeout=15) as client:
            r = await client.post(target, data=params, headers={SIGNATURE_HEADER: sig})
        if r.status_code != 200:
            raise SimulationError(f"outbound answer answered {r.status_code}: {r.text[:200]}")
        result = await self._stream(r.text, utterances, options)
        await self.status("completed", 99)
        return result

    async def _stream(
        self, twiml: str, utterances: list[tuple[str, bytes]], options: dict[str, Any]
    ) -> SimulationResult:
        """Connect the stream the TwiML names and hold the conversation on it."""
        stream = ET.fromstring(twiml).find("./Connect/Stream")
        if stream is None:
            raise SimulationError(f"the platform did not connect a stream: {twiml[:200]}")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        result = SimulationResult(self.call_sid, params.get("call_id", ""), twiml)
        url = stream.get("url", "")
        ws_url = url.replace(
            self.public_url.replace("http", "ws", 1), self.base_url.replace("http", "ws", 1), 1
        )
        headers = {SIGNATURE_HEADER: compute_signature(url, [], self.auth_token)}
        wire = TwilioWire(self.stream_sid)
        async with websockets.connect(ws_url, additional_headers=headers, max_size=2**22) as ws:
            if self.api is not None:
                self.api.streams[self.call_sid] = (ws, wire)
            await ws.send(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            )
            await ws.send(json.dumps(self._start(params)))
            try:
                await Conversation(ws, wire, result).converse(
                    utterances,
                    options.get("greeting_timeout", 40.0),
                    options.get("reply_timeout", 40.0),
                    options.get("quiet_after_reply", 1.5),
                    tuple(options.get("inject", ())),
                    options.get("barge_in_after"),
                    options.get("dtmf"),
                )
            finally:
                if self.api is not None:
                    self.api.streams.pop(self.call_sid, None)
        return result

    def _start(self, params: dict[str, str]) -> dict[str, object]:
        return {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }
