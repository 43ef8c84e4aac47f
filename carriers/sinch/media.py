"""Sinch stream WebSocket codec: binary 16-bit little-endian PCM both ways. Pure.

Sinch sends ``{"command":"connect",...}`` first; we answer ``{"command":"answer"}``. Audio then
flows as binary frames (mono, the sample rate of the connect message). ``{"command":"clear"}``
drops queued playback (barge-in); ``{"command":"heartbeat"}`` keeps a silent call alive (the
session sends it: keeping time is not a codec's job). Documented for Voice API v2; v1 is
believed identical (shared/docs/carriers.md).

Keypad input: Sinch's Voice Stream protocol (developers.sinch.com, Voice Stream 1.0.0:
ConnectRequest, answer/busy/reject, audio both ways, clear, heartbeat) documents no DTMF
message, and Voice API v1 reports keys only through ``runMenu`` and its PIE callback, an
action that would replace the stream. Not documented for the stream, then: this codec accepts
the one keypad message Sinch documents on a WebSocket, Voice Relay's ``DtmfReceive``
(``{"command": "dtmf", "sequence": "1"}``, developers.sinch.com, Voice Relay, DtmfReceive),
as the closest mechanism, one key per message. Confirm with Sinch before relying on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

from carriers.base import StreamStart
from carriers.errors import MediaMalformed
from carriers.playback import PlaybackAcks

ANSWER = json.dumps({"command": "answer"})
CLEAR = json.dumps({"command": "clear"})
HEARTBEAT = json.dumps({"command": "heartbeat"})
#: A binary frame larger than this (1 s of 16 kHz audio) is refused.
MAX_FRAME_BYTES = 32_000
#: The keypad message's ``command`` (Voice Relay's DtmfReceive shape; see the module notes).
DTMF_COMMAND = "dtmf"


def dtmf_message(key: str) -> str:
    """One key as the stream's keypad message (what the simulator sends)."""
    return json.dumps({"command": DTMF_COMMAND, "sequence": key})


def parse_dtmf(msg: dict[str, Any]) -> KeypadEntry:
    """The key of a keypad message; :class:`MediaMalformed` unless it is exactly one key."""
    sequence = msg.get("sequence")
    if not isinstance(sequence, str) or len(sequence) != 1:
        raise MediaMalformed("dtmf message without exactly one key")
    try:
        return KeypadEntry(sequence)
    except ValueError as e:
        raise MediaMalformed(f"unknown DTMF key {sequence!r}") from e


def parse_connect(raw: str | bytes) -> tuple[StreamStart, int]:
    """The first message: the stream, its call and headers, and the sample rate."""
    if isinstance(raw, bytes):
        raise MediaMalformed("audio before connect")
    try:
        msg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise MediaMalformed(f"not JSON: {e.msg}") from e
    if not isinstance(msg, dict) or msg.get("command") != "connect":
        raise MediaMalformed("expected a connect command")
    call_id = msg.get("callId")
    rate = msg.get("sampleRate")
    if not isinstance(call_id, str) or not call_id:
        raise MediaMalformed("connect without callId")
    if msg.get("codec", "PCM") != "PCM" or rate not in (8000, 16000):
        raise MediaMalformed(f"unsupported audio {msg.get('codec')}/{rate}")
    headers = msg.get("callHeaders") or {}
    if isinstance(headers, list):  # the SVAML shape, [{"key":..., "value":...}]
        headers = {h.get("key"): h.get("value") for h in headers if isinstance(h, dict)}
    if not isinstance(headers, dict):
        raise MediaMalformed("callHeaders is not an object")
    params = {str(k): str(v) for k, v in headers.items()}
    return StreamStart(call_id, call_id, params), int(rate)


class SinchMediaCodec(FrameSerializer, PlaybackAcks):
    """Serializer for one Sinch stream at ``stream_rate``.

    Sinch documents no playback acknowledgement (no ``mark``): the session times playback
    from the audio's duration instead (:mod:`carriers.playback`).
    """

    def __init__(self, stream_rate: int, on_invalid: Callable[[str], None] | None = None) -> None:
        """Codec for a stream at ``stream_rate`` Hz."""
        super().__init__()
        PlaybackAcks.__init__(self)
        self.stream_rate = stream_rate
        self._on_invalid = on_invalid or (lambda reason: None)
        self._sample_rate = 0
        self._in = create_stream_resampler()
        self._out = create_stream_resampler()

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Learn the pipeline's input rate."""
        self._sample_rate = setup.audio_in_sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Agent audio to binary PCM at the stream rate; interruption to ``clear``."""
        if isinstance(frame, InterruptionFrame):
            return CLEAR
        if isinstance(frame, AudioRawFrame):
            pcm = await self._out.resample(frame.audio, frame.sample_rate, self.stream_rate)
            return pcm or None
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Caller audio to frames, a keypad message to a DTMF frame; other text is ignored."""
        if isinstance(data, bytes):
            if len(data) % 2 or len(data) > MAX_FRAME_BYTES:
                self._on_invalid(f"binary frame of {len(data)} bytes is not 16-bit PCM")
                return None
            pcm = await self._in.resample(data, self.stream_rate, self._sample_rate)
            if not pcm:
                return None
            frame = InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate)
            return self._counted(frame)
        try:
            msg: Any = json.loads(data)
        except json.JSONDecodeError:
            self._on_invalid("text frame is not JSON")
            return None
        if not isinstance(msg, dict) or "command" not in msg and "event" not in msg:
            self._on_invalid("text frame without command")
            return None
        if msg.get("command") == DTMF_COMMAND:
            try:
                return InputDTMFFrame(parse_dtmf(msg))
            except MediaMalformed as e:
                self._on_invalid(str(e))
        return None
