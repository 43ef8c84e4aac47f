"""An RTP session as the pipeline sees a carrier's media: a socket-like object and its codec.

:class:`RtpSocket` offers the calls pipecat's FastAPI WebSocket transport makes on an ASGI
WebSocket (``receive``, ``send_bytes``, ``close``; ``connected`` for its states, which the app
maps to the framework's), so a SIP call runs through the same stream runner
(voice/transport.py ``run_stream``) as the WebSocket carriers. Messages on it: bytes are
16-bit 8 kHz PCM, text is one keypad key; :class:`SipMediaCodec` turns them into frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

from carriers.playback import PlaybackAcks, PlaybackMarkFrame
from carriers.sip.codec import CLOCK_RATE
from carriers.sip.rtp import RtpSession

#: Caller audio waiting for the pipeline beyond this many messages (20 ms each) is dropped.
MAX_QUEUED = 500


class RtpSocket:
    """The call's RTP stream behind the calls pipecat makes on a media WebSocket.

    ``on_close`` runs once when our side closes it (the platform ends the call: BYE);
    :meth:`peer_gone` ends the stream when the caller hung up.
    """

    def __init__(self, on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """Open; attach the RTP session with :meth:`attach` before the pipeline runs."""
        self.headers: dict[str, str] = {}
        #: Until either side ends the call (the web framework's "connected" state).
        self.connected = True
        self._queue: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self._on_close = on_close
        self._closed = False
        self.rtp: RtpSession | None = None
        #: Caller audio dropped because the pipeline fell behind (messages).
        self.overflow = 0

    def attach(self, rtp: RtpSession) -> None:
        """The RTP session whose audio goes out through :meth:`send_bytes`."""
        self.rtp = rtp

    # RTP side
    def audio(self, pcm: bytes) -> None:
        """Caller audio from the RTP session (16-bit, 8 kHz)."""
        if self._queue.qsize() >= MAX_QUEUED:
            self.overflow += 1
            return
        self._queue.put_nowait(pcm)

    def key(self, key: str) -> None:
        """A keypad key from the RTP session."""
        self._queue.put_nowait(key)

    def peer_gone(self) -> None:
        """The caller hung up: the stream ends, nothing is sent any more."""
        self.connected = False
        self._closed = True
        self._queue.put_nowait(None)

    # WebSocket side (pipecat's transport and voice.media.MediaSocket)
    async def accept(self) -> None:
        """Nothing to do: the call was answered in SIP."""

    async def receive(self) -> dict[str, Any]:
        """The next ASGI message: caller audio (bytes), a key (text), or the disconnect."""
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later read sees the end as well
            return {"type": "websocket.disconnect", "code": 1000}
        if isinstance(item, bytes):
            return {"type": "websocket.receive", "bytes": item}
        return {"type": "websocket.receive", "text": item}

    async def receive_text(self) -> str:
        """The next keypad key (audio before it is skipped); raises once the caller is gone."""
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                raise ConnectionError("the caller hung up")
            if "text" in message:
                return str(message["text"])

    async def send_bytes(self, data: bytes) -> None:
        """Agent audio (16-bit, 8 kHz) for the caller."""
        if self.rtp is not None and not self._closed:
            self.rtp.send(data)

    async def send_text(self, data: str) -> None:
        """Text messages have no meaning on RTP: ignored."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Our side ends the call: the stream ends and ``on_close`` runs (once)."""
        self.connected = False
        first = not self._closed
        self._closed = True
        self._queue.put_nowait(None)
        if first and self._on_close is not None:
            await self._on_close()


class SipMediaCodec(FrameSerializer, PlaybackAcks):
    """Frames to and from an :class:`RtpSocket`; playback marks are answered by the RTP sender.

    RTP is played as it is sent, so a mark is reported once the audio before it has gone out.
    """

    acknowledges_playback = True

    def __init__(self, socket: RtpSocket, on_invalid: Callable[[str], None] | None = None) -> None:
        """Codec for ``socket``'s stream; the pipeline's input rate comes from its setup."""
        FrameSerializer.__init__(self)
        PlaybackAcks.__init__(self)
        self._socket = socket
        self._on_invalid = on_invalid or (lambda reason: None)
        self._sample_rate = 16000
        self._in = create_stream_resampler()
        self._out = create_stream_resampler()

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Take the pipeline's input sample rate."""
        self._sample_rate = setup.audio_in_sample_rate or self._sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Agent audio as 8 kHz PCM; interruptions and marks act on the RTP sender directly."""
        rtp = self._socket.rtp
        if isinstance(frame, OutputAudioRawFrame):
            pcm = frame.audio
            if frame.sample_rate != CLOCK_RATE:
                pcm = await self._out.resample(pcm, frame.sample_rate, CLOCK_RATE)
            return pcm or None
        if isinstance(frame, InterruptionFrame) and rtp is not None:
            rtp.clear()
        elif isinstance(frame, PlaybackMarkFrame):
            name = frame.message
            if rtp is None:
                self._played(name)
            else:
                rtp.mark(lambda: self._played(name))
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Caller audio at the pipeline's rate, or a keypad key."""
        if isinstance(data, bytes):
            pcm = await self._in.resample(data, CLOCK_RATE, self._sample_rate)
            if not pcm:
                return None
            frame = InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate)
            return self._counted(frame)
        try:
            return InputDTMFFrame(KeypadEntry(data))
        except ValueError:
            self._on_invalid("unknown keypad key")
            return None
