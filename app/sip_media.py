"""SIP calls in the platform: pipecat's transport over their RTP, and the stack's handlers.

The RTP socket (carriers/sip/media.py) knows no web framework; a view gives it the connection
states pipecat's FastAPI WebSocket transport reads, as Starlette's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from starlette.websockets import WebSocketState

from carriers.sip.media import RtpSocket
from carriers.sip.rtp import port_range
from carriers.sip.stack import SipStack
from telephony.sip_calls import AccountLookup, SipCalls, SipMediaSettings
from voice.media import MediaSocket

if TYPE_CHECKING:
    from app.platform import Platform


class _AsgiView:
    """An :class:`RtpSocket` with Starlette's connection states."""

    def __init__(self, socket: RtpSocket) -> None:
        self._socket = socket
        self.headers = socket.headers

    @property
    def client_state(self) -> WebSocketState:
        return WebSocketState.CONNECTED if self._socket.connected else WebSocketState.DISCONNECTED

    application_state = client_state

    async def receive(self) -> dict[str, Any]:
        return await self._socket.receive()

    async def send_bytes(self, data: bytes) -> None:
        await self._socket.send_bytes(data)

    async def send_text(self, data: str) -> None:
        await self._socket.send_text(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._socket.close(code, reason)


def rtp_transport(socket: MediaSocket, codec: FrameSerializer | None) -> BaseTransport:
    """Pipecat's FastAPI WebSocket transport over a SIP call's :class:`RtpSocket`."""
    if not isinstance(socket, RtpSocket) or codec is None:
        raise TypeError("a SIP call's media socket is an RtpSocket, with its codec")
    params = FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=codec
    )
    return FastAPIWebsocketTransport(_AsgiView(socket), params)  # type: ignore[arg-type]


def sip_calls(platform: Platform, stack: SipStack, accounts: AccountLookup) -> SipCalls:
    """The platform's answering of SIP calls, attached to ``stack`` (its INVITEs and BYEs).

    ``accounts`` gives an account's tenant and agent (``telephony.sip.SipAccounts.route_of``).
    """
    settings = platform.settings
    calls = SipCalls(
        accounts,
        platform.directory,
        platform.admission,
        platform.calls,
        platform.stream_deps,
        SipMediaSettings(
            settings.sip_host, stack.advertised_host, port_range(settings.sip_rtp_ports)
        ),
        rtp_transport,
        stack=stack,
    )
    stack.on_invite(calls.invite)
    stack.on_bye(calls.caller_bye)
    stack.on_reinvite(calls.reinvite)
    return calls
