"""Twilio Media Streams codec: wire JSON <-> pipecat frames. Pure: no REST, no hang-up.

Built on pipecat's ``TwilioFrameSerializer`` with its REST hang-up switched off (hanging up is
call control: our side closes the socket and Twilio ends the call). Incoming messages are
checked first: a malformed one is dropped and reported, never allowed to end the stream.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import ulaw_to_pcm
from pipecat.frames.frames import Frame, InputAudioRawFrame, InputDTMFFrame
from pipecat.serializers.twilio import TwilioFrameSerializer

from carriers.base import StreamStart
from carriers.errors import MediaMalformed
from carriers.playback import PlaybackAcks, PlaybackMarkFrame

KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})
#: A media payload larger than this (5 s of 8 kHz mu-law) is refused.
MAX_PAYLOAD_BYTES = 40_000


def parse_message(raw: str | bytes) -> dict[str, Any]:
    """Decode one text message and check its envelope; :class:`MediaMalformed` if invalid."""
    if isinstance(raw, bytes):
        raise MediaMalformed("binary frame on a Twilio media stream")
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as e:
        raise MediaMalformed(f"not JSON: {e.msg}") from e
    if not isinstance(message, dict):
        raise MediaMalformed("message is not a JSON object")
    event = message.get("event")
    if event not in KNOWN_EVENTS:
        raise MediaMalformed(f"unknown event {event!r}")
    return message


def parse_start(message: dict[str, Any]) -> StreamStart:
    """The ``start`` message: stream id, call SID and our ``<Parameter>``s."""
    start = message.get("start")
    if message.get("event") != "start" or not isinstance(start, dict):
        raise MediaMalformed("expected a start message")
    stream_sid = message.get("streamSid") or start.get("streamSid")
    call_sid = start.get("callSid")
    params = start.get("customParameters") or {}
    if not isinstance(stream_sid, str) or not isinstance(call_sid, str) or not call_sid:
        raise MediaMalformed("start without streamSid or callSid")
    if not isinstance(params, dict):
        raise MediaMalformed("customParameters is not an object")
    fmt = start.get("mediaFormat") or {}
    if fmt and (fmt.get("encoding"), fmt.get("sampleRate")) != ("audio/x-mulaw", 8000):
        raise MediaMalformed(f"unsupported media format {fmt}")
    return StreamStart(stream_sid, call_sid, {str(k): str(v) for k, v in params.items()})


def check_media(message: dict[str, Any], stream_sid: str) -> bytes | None:
    """Validate a message of a running stream; the decoded mu-law payload of a media message."""
    sid = message.get("streamSid")
    if message["event"] in ("media", "mark", "dtmf") and sid != stream_sid:
        raise MediaMalformed(f"message for unknown stream {sid!r}")
    if message["event"] == "media":
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise MediaMalformed("media without payload")
        try:
            decoded = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MediaMalformed("media payload is not base64") from e
        if len(decoded) > MAX_PAYLOAD_BYTES:
            raise MediaMalformed("media payload too large")
        return decoded
    return None


class TwilioMediaCodec(TwilioFrameSerializer, PlaybackAcks):
    """Serializer for one Twilio stream; ``on_invalid`` hears about each dropped message.

    Twilio echoes each ``mark`` once the audio sent before it has played: the echo goes to
    ``on_played`` (:mod:`carriers.playback`).
    """

    acknowledges_playback = True

    def __init__(self, stream_sid: str, on_invalid: Callable[[str], None] | None = None) -> None:
        """Codec for stream ``stream_sid``; pipeline input rate comes from the pipeline."""
        super().__init__(stream_sid, params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        PlaybackAcks.__init__(self)
        self._on_invalid = on_invalid or (lambda reason: None)
        self.stream_sid = stream_sid

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """As pipecat's serializer, plus our playback marks."""
        if isinstance(frame, PlaybackMarkFrame):
            mark = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": frame.message}}
            return json.dumps(mark)
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Checked decode: a malformed message becomes ``None`` and an ``on_invalid`` report."""
        try:
            message = parse_message(data)
            payload = check_media(message, self.stream_sid)
        except MediaMalformed as e:
            self._on_invalid(str(e))
            return None
        if payload is not None:
            pcm = await ulaw_to_pcm(
                payload, self._twilio_sample_rate, self._sample_rate, self._input_resampler
            )
            if not pcm:
                return None
            frame = InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate)
            return self._counted(frame)
        if message["event"] == "mark":
            mark = message.get("mark")
            self._played(mark.get("name") if isinstance(mark, dict) else None)
        if message["event"] == "dtmf":
            digit = (message.get("dtmf") or {}).get("digit")
            try:
                return InputDTMFFrame(KeypadEntry(str(digit)))
            except ValueError:
                self._on_invalid(f"unknown DTMF digit {digit!r}")
        return None
