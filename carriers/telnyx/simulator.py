"""A local Telnyx: a Call Control call into a running platform, as Telnyx places it.

It signs ``call.initiated`` with the account's Ed25519 key, serves the Call Control REST API
the platform answers through (``actions/answer``, ``hangup``) on a loopback port, connects the
media WebSocket the answer names (``connected``, ``start`` with our ``client_state``, PCMU
``media`` with ``chunk`` numbers) and sends ``call.hangup`` when the call ends.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import json
import secrets
import time
import uuid
from typing import Any

import httpx
import websockets
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carriers.simulation import (
    Conversation,
    Heard,
    LoopbackApi,
    SimulationError,
    SimulationResult,
)

MEDIA_FORMAT = {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}


class TelnyxWire:
    """Telnyx media messages, from Telnyx's side."""

    def __init__(self, stream_id: str) -> None:
        """Messages of stream ``stream_id``."""
        self.stream_id = stream_id
        self.seq = 2
        self.chunk = 0

    def encode(self, pcm: bytes) -> str:
        """One ``media`` message of PCMU audio, numbered."""
        self.seq += 1
        self.chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequence_number": str(self.seq),
                "stream_id": self.stream_id,
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(self.chunk * 20),
                    "payload": base64.b64encode(audioop.lin2ulaw(pcm, 2)).decode(),
                },
            }
        )

    def decode(self, raw: str | bytes) -> Heard:
        """Agent audio, ``clear``, or a ``mark`` to send back once the audio before it played."""
        msg: dict[str, Any] = json.loads(raw)
        if msg.get("event") == "media":
            return Heard(audio=audioop.ulaw2lin(base64.b64decode(msg["media"]["payload"]), 2))
        if msg.get("event") == "mark":
            self.seq += 1
            echo = {
                "event": "mark",
                "sequence_number": str(self.seq),
                "stream_id": self.stream_id,
                "mark": msg.get("mark", {}),
            }
            return Heard(played_reply=json.dumps(echo))
        return Heard(clear=msg.get("event") == "clear")

    def key(self, digit: str) -> str:
        """A ``dtmf`` message: one key pressed by the caller."""
        self.seq += 1
        return json.dumps(
            {
                "event": "dtmf",
                "sequence_number": str(self.seq),
                "stream_id": self.stream_id,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "dtmf": {"digit": digit},
            }
        )

    def stop(self) -> str:
        """The ``stop`` message."""
        return json.dumps({"event": "stop", "stream_id": self.stream_id, "stop": {}})


class FakeCallControl(LoopbackApi):
    """The Call Control REST API on loopback: records commands as the platform sends them."""

    def __init__(self, api_key: str, port: int) -> None:
        """Accept ``Bearer api_key`` on ``127.0.0.1:port``."""
        super().__init__(port)
        self.api_key = api_key
        self.commands: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
        self.log: list[tuple[str, str, dict[str, Any]]] = []

    def add_routes(self, app: web.Application) -> None:
        """``POST /v2/calls`` (dial) and ``POST /v2/calls/{id}/actions/{action}``."""
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_post("/v2/calls/{ccid}/actions/{action}", self._action)

    async def _dial(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"errors": [{"code": "10009"}]}, status=401)
        body = await request.json()
        limit = body.get("time_limit_secs", 14400)  # Telnyx's default and its maximum
        if not isinstance(limit, int) or not 0 < limit <= 14400:
            return web.json_response({"errors": [{"code": "90015"}]}, status=422)
        ccid = "v3:" + secrets.token_urlsafe(24)
        self.log.append((ccid, "dial", body))
        await self.commands.put((ccid, "dial", body))
        call = {
            "call_control_id": ccid,
            "call_leg_id": str(uuid.uuid4()),
            "call_session_id": str(uuid.uuid4()),
            "record_type": "call",
            "is_alive": True,
        }
        return web.json_response({"data": call})

    async def _action(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"errors": [{"code": "10009", "title": "Authentication failed"}]}, status=401
            )
        body = await request.json()
        command = (request.match_info["ccid"], request.match_info["action"], body)
        self.log.append(command)
        await self.commands.put(command)
        return web.json_response({"data": {"result": "ok"}})

    async def next_dial(self, limit_s: float) -> tuple[str, dict[str, Any]]:
        """The next outbound call the platform dials: its call control id and request."""
        async with asyncio.timeout(limit_s):
            while True:
                ccid, action, body = await self.commands.get()
                if action == "dial":
                    return ccid, body

    async def next_for(self, ccid: str, limit_s: float) -> tuple[str, dict[str, Any]]:
        """The next command for call ``ccid``."""
        async with asyncio.timeout(limit_s):
            while True:
                got, action, body = await self.commands.get()
                if got == ccid:
                    return action, body


class TelnyxSimulator:
    """Plays Telnyx's part of one inbound call against ``public_url``."""

    def __init__(
        self,
        public_url: str,
        private_key_b64: str,
        api_key: str,
        api_port: int,
        *,
        to: str,
        from_: str = "+15555550123",
        connection_id: str = "sim-connection",
    ) -> None:
        """Call ``to``; sign with the account's private key; serve its API on ``api_port``."""
        self.public_url = public_url.rstrip("/")
        self.key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key_b64))
        self.api = FakeCallControl(api_key, api_port)
        self.to = to
        self.from_ = from_
        self.connection_id = connection_id
        self.ccid = "v3:" + secrets.token_urlsafe(24)
        self.stream_id = str(uuid.uuid4())

    def envelope(self, event_type: str, **payload: Any) -> bytes:
        """A webhook body as Telnyx sends it."""
        return json.dumps(
            {
                "data": {
                    "record_type": "event",
                    "event_type": event_type,
                    "id": str(uuid.uuid4()),
                    "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                    "payload": {
                        "call_control_id": self.ccid,
                        "connection_id": self.connection_id,
                        "call_leg_id": str(uuid.uuid4()),
                        "call_session_id": str(uuid.uuid4()),
                        "from": self.from_,
                        "to": self.to,
                        "direction": "incoming",
                        **payload,
                    },
                },
                "meta": {"attempt": 1, "delivered_to": self.public_url + "/webhooks/telnyx"},
            }
        ).encode()

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The signature headers for ``body``."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = self.key.sign(ts.encode() + b"|" + body)
        return {
            "telnyx-signature-ed25519": base64.b64encode(sig).decode(),
            "telnyx-timestamp": ts,
            "content-type": "application/json",
        }

    async def deliver(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST one webhook (signed now unless ``headers`` are given)."""
        async with httpx.AsyncClient(timeout=15) as c:
            return await c.post(
                self.public_url + "/webhooks/telnyx",
                content=body,
                headers=headers or self.sign(body),
            )

    async def run(self, utterances: list[tuple[str, bytes]], **options: Any) -> SimulationResult:
        """Place the call; say each utterance after the agent has finished talking."""
        async with self.api:
            body = self.envelope("call.initiated", state="parked", client_state=None)
            r = await self.deliver(body)
            if r.status_code != 200:
                raise SimulationError(f"call.initiated answered {r.status_code}: {r.text[:200]}")
            action, command = await self.api.next_for(self.ccid, 15)
            if action != "answer":
                raise SimulationError(f"the platform did not answer: it sent {action}")
            state = command["client_state"]
            call_id = json.loads(base64.b64decode(state)).get("call_id", "")
            result = SimulationResult(self.ccid, call_id, json.dumps(command))
            await self.deliver(self.envelope("call.answered", state="answered", client_state=state))
            await self._stream(command["stream_url"], state, result, utterances, options)
            hung_up_by_platform = any(a == "hangup" for c, a, _ in self.api.log if c == self.ccid)
            cause = {
                "hangup_cause": "normal_clearing",
                "hangup_source": "callee" if hung_up_by_platform else "caller",
            }
            await self.deliver(
                self.envelope("call.hangup", state="hangup", client_state=state, **cause)
            )
        return result

    async def transfer_leg(self, transfer: dict[str, Any], *, answered: bool) -> None:
        """Play the leg an ``actions/transfer`` (its body: ``transfer``) dialed, as Telnyx does.

        The leg's events carry the command's ``client_state``. Answered: ``call.initiated``,
        ``call.answered`` and ``call.bridged``. Not (busy, no answer): ``call.initiated``, then
        only the leg's ``call.hangup``; the original call stays up.
        """
        leg = "v3:" + secrets.token_urlsafe(24)
        common = {
            "call_control_id": leg,
            "client_state": transfer.get("client_state"),
            "from": self.to,
            "to": transfer["to"],
            "direction": "outgoing",
        }
        cause = {"hangup_cause": "timeout", "hangup_source": "unknown"}
        events = (
            [("call.initiated", {}), ("call.answered", {}), ("call.bridged", {})]
            if answered
            else [("call.initiated", {}), ("call.hangup", cause)]
        )
        for event_type, extra in events:
            state = event_type.removeprefix("call.")
            r = await self.deliver(self.envelope(event_type, state=state, **common, **extra))
            if r.status_code != 200:
                raise SimulationError(f"{event_type} answered {r.status_code}: {r.text[:200]}")

    async def answer_outbound(
        self, utterances: list[tuple[str, bytes]], **options: Any
    ) -> SimulationResult:
        """Be the far end of an outbound call the platform dials (``self.api`` must be open)."""
        self.ccid, dial = await self.api.next_dial(30)
        state = dial["client_state"]
        call_id = json.loads(base64.b64decode(state)).get("call_id", "")
        result = SimulationResult(self.ccid, call_id, json.dumps(dial))
        self.from_, self.to = dial["from"], dial["to"]
        await self.deliver(
            self.envelope("call.initiated", direction="outgoing", client_state=state)
        )
        await self.deliver(self.envelope("call.answered", direction="outgoing", client_state=state))
        await self._stream(dial["stream_url"], state, result, utterances, options)
        await self.deliver(
            self.envelope(
                "call.hangup",
                direction="outgoing",
                client_state=state,
                hangup_cause="normal_clearing",
            )
        )
        return result

    async def _stream(
        self,
        url: str,
        state: str,
        result: SimulationResult,
        utterances: list[tuple[str, bytes]],
        options: dict[str, Any],
    ) -> None:
        """Connect the media stream as Telnyx does and hold the conversation on it."""
        async with websockets.connect(url, max_size=2**22) as ws:
            await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
            await ws.send(
                json.dumps(
                    {
                        "event": "start",
                        "sequence_number": "1",
                        "stream_id": self.stream_id,
                        "start": {
                            "call_control_id": self.ccid,
                            "call_session_id": str(uuid.uuid4()),
                            "from": self.from_,
                            "to": self.to,
                            "client_state": state,
                            "media_format": MEDIA_FORMAT,
                        },
                    }
                )
            )
            await Conversation(ws, TelnyxWire(self.stream_id), result).converse(
                utterances,
                options.get("greeting_timeout", 40.0),
                options.get("reply_timeout", 40.0),
                options.get("quiet_after_reply", 1.5),
                tuple(options.get("inject", ())),
                options.get("barge_in_after"),
                options.get("dtmf"),
            )
