"""Telnyx media WebSocket codec: JSON with base64 PCMU, reordered by ``chunk``. Pure.

pipecat's ``TelnyxFrameSerializer`` falls short here (shared/docs/carriers.md): it hangs up over
REST inside ``serialize``, knows only ``PCMU``/``PCMA`` as encoding names and plays chunks in
arrival order although Telnyx does not guarantee order. This codec accepts ``PCMU`` and
``audio/x-mulaw``, reorders by ``chunk`` through a small jitter buffer, and leaves call control
to ``carriers.telnyx.control``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler, pcm_to_ulaw, ulaw_to_pcm
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
from carriers.playback import PlaybackAcks, PlaybackMarkFrame
from carriers.telnyx.webhook import Event

MULAW_NAMES = frozenset({"PCMU", "audio/x-mulaw"})
EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop", "error"})
RATE = 8000
MAX_PAYLOAD_BYTES = 40_000


class ChunkReorderer:
    """Releases payloads in ``chunk`` order; waits for a gap at most ``depth`` chunks."""

    def __init__(self, depth: int = 5) -> None:
        """Hold out-of-order chunks until the missing one arrives or ``depth`` are waiting."""
        self.depth = depth
        self.next: int | None = None
        self._held: dict[int, bytes] = {}
        self.dropped = 0

    def push(self, chunk: int, payload: bytes) -> bytes:
        """Take one chunk; return what can now be played, in order (maybe nothing)."""
        if self.next is None:
            self.next = chunk
        if chunk < self.next or chunk in self._held:
            self.dropped += 1  # late or duplicate: its moment has passed
            return b""
        self._held[chunk] = payload
        if self.next not in self._held and len(self._held) > self.depth:
            self.next = min(self._held)  # give up on the gap: it was lost
        out = bytearray()
        while self.next in self._held:
            out += self._held.pop(self.next)
            self.next += 1
        return bytes(out)


def counter(value: object, name: str) -> int:
    """A non-negative whole number sent as JSON number or decimal string (``chunk``, rates).

    Anything else (``1e999``, ``NaN``, ``"x"``, ``true``, a list) is :class:`MediaMalformed`.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        number = int(value)
    else:
        raise MediaMalformed(f"{name} is not a whole number")
    if not 0 <= number < 1 << 63:
        raise MediaMalformed(f"{name} out of range")
    return number


def parse_message(raw: str | bytes) -> dict[str, Any]:
    """One text message with a known ``event``; :class:`MediaMalformed` otherwise."""
    if isinstance(raw, bytes):
        raise MediaMalformed("binary frame on a Telnyx media stream")
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or nesting beyond the stack
        raise MediaMalformed(f"not JSON: {type(e).__name__}") from e
    if not isinstance(msg, dict) or msg.get("event") not in EVENTS:
        raise MediaMalformed(
            f"unknown event {msg.get('event') if isinstance(msg, dict) else msg!r}"
        )
    return msg


def parse_start(msg: dict[str, Any]) -> StreamStart:
    """The ``start`` message: stream id, call control id and our ``client_state``."""
    start = msg.get("start")
    if msg.get("event") != "start" or not isinstance(start, dict):
        raise MediaMalformed("expected a start message")
    stream_id = msg.get("stream_id")
    ccid = start.get("call_control_id")
    if not isinstance(stream_id, str) or not stream_id or not isinstance(ccid, str) or not ccid:
        raise MediaMalformed("start without stream_id or call_control_id")
    fmt = start.get("media_format") or {}
    if not isinstance(fmt, dict):
        raise MediaMalformed("media_format is not an object")
    if fmt and (
        fmt.get("encoding") not in MULAW_NAMES
        or counter(fmt.get("sample_rate", RATE), "sample_rate") != RATE
    ):
        raise MediaMalformed(f"unsupported media format {str(fmt)[:200]}")
    raw_state = start.get("client_state")
    if raw_state is not None and not isinstance(raw_state, str):
        raise MediaMalformed("client_state is not a string")
    state = Event("", "", ccid, "", {"client_state": raw_state}).client_state
    return StreamStart(stream_id, ccid, state)


class TelnyxMediaCodec(FrameSerializer, PlaybackAcks):
    """Serializer for one Telnyx stream (PCMU 8 kHz both ways).

    Telnyx sends a ``mark`` back once the audio sent before ours has played: the echo goes to
    ``on_played`` (:mod:`carriers.playback`).
    """

    acknowledges_playback = True

    def __init__(self, stream_id: str, on_invalid: Callable[[str], None] | None = None) -> None:
        """Codec for stream ``stream_id``."""
        super().__init__()
        PlaybackAcks.__init__(self)
        self.stream_id = stream_id
        self._on_invalid = on_invalid or (lambda reason: None)
        self._sample_rate = 0
        self._in = create_stream_resampler()
        self._out = create_stream_resampler()
        self.reorder = ChunkReorderer()

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Learn the pipeline's input rate."""
        self._sample_rate = setup.audio_in_sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Agent audio to ``media`` (base64 PCMU); interruption to ``clear``."""
        if isinstance(frame, InterruptionFrame):
            return json.dumps({"event": "clear"})
        if isinstance(frame, PlaybackMarkFrame):
            return json.dumps({"event": "mark", "mark": {"name": frame.message}})
        if isinstance(frame, AudioRawFrame):
            ulaw = await pcm_to_ulaw(frame.audio, frame.sample_rate, RATE, self._out)
            if not ulaw:
                return None
            payload = base64.b64encode(ulaw).decode()
            return json.dumps({"event": "media", "media": {"payload": payload}})
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Checked decode; out-of-order media is held and released in ``chunk`` order."""
        try:
            msg = parse_message(data)
            if msg["event"] == "media":
                return await self._media(msg)
        except MediaMalformed as e:
            self._on_invalid(str(e))
            return None
        if msg["event"] == "dtmf":
            dtmf = msg.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
            try:
                return InputDTMFFrame(KeypadEntry(str(digit)))
            except ValueError:
                self._on_invalid(f"unknown DTMF digit {digit!r}")
        elif msg["event"] == "mark":
            mark = msg.get("mark")
            self._played(mark.get("name") if isinstance(mark, dict) else None)
        elif msg["event"] == "error":
            self._on_invalid(f"Telnyx stream error: {msg.get('payload') or msg.get('error')}")
        return None

    async def _media(self, msg: dict[str, Any]) -> Frame | None:
        if msg.get("stream_id", self.stream_id) != self.stream_id:
            raise MediaMalformed(f"message for unknown stream {msg.get('stream_id')!r}")
        media = msg.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise MediaMalformed("media without payload")
        chunk = counter(media.get("chunk", 0), "chunk")
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise MediaMalformed("media payload is not base64") from e
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MediaMalformed("media payload too large")
        if media.get("track", "inbound") != "inbound":
            return None  # our own audio echoed back on both_tracks
        ordered = self.reorder.push(chunk, payload)
        if not ordered:
            return None
        pcm = await ulaw_to_pcm(ordered, RATE, self._sample_rate, self._in)
        if not pcm:
            return None
        frame = InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate)
        return self._counted(frame)
