"""A local Twilio: places a call into a running platform exactly as Twilio would.

Signed voice webhook, then the Media Streams WebSocket (signed upgrade, ``connected`` and
``start``, 20 ms mu-law frames in real time, ``stop``). It records what the agent says and
times, per turn, the gap from the end of the caller's speech to the first agent audio.
"""

from __future__ import annotations

import audioop
import base64
import json
import secrets
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import websockets

from carriers.simulation import Conversation, Heard, SimulationError, SimulationResult
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
    ) -> None:
        """Call ``to`` at the platform whose public address is ``public_url``.

        ``base_url`` is where requests really go when it differs from the public address
        (a platform behind a reverse proxy); signatures always cover the public URL.
        """
        self.public_url = public_url.rstrip("/")
        self.base_url = (base_url or public_url).rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.to = to
        self.from_ = from_
        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)

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
    ) -> SimulationResult:
        """Place the call and say each ``(label, pcm8k)`` after the agent has finished talking.

        ``inject`` is sent raw once the greeting is over (tests use it for malformed messages).
        With ``barge_in_after``, each line but the last is followed by the next one that many
        seconds after the agent starts answering: the caller talks over the agent.
        """
        r = await self.post_signed("/webhooks/twilio/voice", self.voice_params())
        if r.status_code != 200:
            raise SimulationError(f"voice webhook answered {r.status_code}: {r.text[:200]}")
        stream = ET.fromstring(r.text).find("./Connect/Stream")
        if stream is None:
            raise SimulationError(f"the platform did not connect a stream: {r.text[:200]}")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        result = SimulationResult(self.call_sid, params.get("call_id", ""), r.text)
        url = stream.get("url", "")
        ws_url = url.replace(
            self.public_url.replace("http", "ws", 1), self.base_url.replace("http", "ws", 1), 1
        )
        headers = {SIGNATURE_HEADER: compute_signature(url, [], self.auth_token)}
        async with websockets.connect(ws_url, additional_headers=headers, max_size=2**22) as ws:
            await ws.send(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            )
            await ws.send(json.dumps(self._start(params)))
            await Conversation(ws, TwilioWire(self.stream_sid), result).converse(
                utterances,
                greeting_timeout,
                reply_timeout,
                quiet_after_reply,
                inject,
                barge_in_after,
            )
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
