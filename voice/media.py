"""The carrier's side of a call as the pipeline sees it: a socket, a transport, a link.

The HTTP edge accepts the carrier's WebSocket and hands it over as a :class:`MediaSocket`,
with a :data:`TransportFactory` that puts pipecat's transport for its web framework on it;
the voice package knows no web framework.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_transport import BaseTransport

from voice.voices import PHONE_RATE


class MediaSocket(Protocol):
    """The calls the pipeline makes on a carrier's media WebSocket (an ASGI WebSocket)."""

    async def accept(self) -> None:
        """Complete the WebSocket handshake."""

    async def receive_text(self) -> str:
        """The next text message; raises when the peer has gone."""

    async def send_text(self, data: str) -> None:
        """Send one text message."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the socket with ``code``."""


#: Builds the pipecat transport over a socket the HTTP edge accepted, speaking a carrier's codec
#: (``None``: a channel whose transport carries its own media, WebRTC).
TransportFactory = Callable[[MediaSocket, FrameSerializer | None], BaseTransport]


@dataclass(frozen=True)
class CarrierLink:
    """What a session does at the carrier besides the audio.

    ``codec`` is the transport's serializer (it reports playback marks, :mod:`carriers.playback`;
    ``None`` on WebRTC); ``keepalive`` a text message the carrier needs while the agent is silent
    (Sinch's heartbeat); ``hang_up`` ends the call through the carrier's REST API where closing
    the media socket is not enough; ``rate`` the sample rate the agent's audio goes out at;
    ``transfers`` whether the channel can hand the call to a person (WebRTC cannot).
    """

    socket: MediaSocket
    codec: FrameSerializer | None
    keepalive: str | None = None
    hang_up: Callable[[], Awaitable[None]] | None = None
    rate: int = PHONE_RATE
    transfers: bool = True
