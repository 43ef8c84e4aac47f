"""Browser calls in the platform: pipecat's SmallWebRTC transport over aiortc, one per call.

An offer is answered by a :class:`BrowserPeer` (aiortc gathers its host candidates before the
answer, so the browser needs no trickle ICE); the call's pipeline runs on pipecat's
``SmallWebRTCTransport`` once the connection is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from telephony.webrtc import CONNECT_TIMEOUT_S, WEB_RATE, WebRtcCalls
from voice.media import MediaSocket
from voice.session import STT_RATE

if TYPE_CHECKING:
    from app.platform import Platform

log = logging.getLogger(__name__)
_DOWN = {"failed", "closed"}


class BrowserPeer:
    """A browser's peer connection, answered; its transport carries one call."""

    def __init__(self, connection: SmallWebRTCConnection) -> None:
        """``connection``, initialized with the browser's offer."""
        self._connection = connection
        answer = connection.get_answer()
        if answer is None:
            raise ValueError("no answer to the offer")
        self.answer: str = answer["sdp"]
        self._state = asyncio.Event()
        self._closed = False
        pc = connection.pc

        @pc.on("connectionstatechange")
        async def _changed() -> None:
            self._state.set()

    @classmethod
    async def answering(cls, offer: str) -> BrowserPeer:
        """Answer ``offer``; ``ValueError`` (or aiortc's error) when it cannot be answered."""
        connection = SmallWebRTCConnection(connection_timeout_secs=int(CONNECT_TIMEOUT_S))
        try:
            await connection.initialize(offer, "offer")
            return cls(connection)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.disconnect()
            raise

    async def connected(self, timeout_s: float) -> bool:
        """Wait until the connection is up; ``False`` when it fails, closes or times out."""
        pc = self._connection.pc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pc.connectionState not in _DOWN | {"connected"}:
            self._state.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state.wait(), left)
        return pc.connectionState == "connected"

    async def gone(self) -> None:
        """Return once the connection has failed or closed."""
        pc = self._connection.pc
        while pc.connectionState not in _DOWN:
            self._state.clear()
            await self._state.wait()

    def transport(self, socket: MediaSocket, codec: FrameSerializer | None) -> BaseTransport:
        """Pipecat's SmallWebRTC transport over this connection: 16 kHz in, 24 kHz out."""
        params = TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=STT_RATE,
            audio_out_sample_rate=WEB_RATE,
        )
        return SmallWebRTCTransport(self._connection, params)

    async def close(self) -> None:
        """Close the connection once (the browser sees the call end)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._connection.disconnect()
        except Exception as e:
            log.info("browser connection closed with an error", extra={"error": type(e).__name__})


def webrtc_calls(platform: Platform) -> WebRtcCalls:
    """The platform's answering of browser calls."""
    return WebRtcCalls(
        platform.directory,
        platform.admission,
        platform.calls,
        platform.stream_deps,
        BrowserPeer.answering,
        lambda agent: platform.prepare(agent, WEB_RATE),
    )
