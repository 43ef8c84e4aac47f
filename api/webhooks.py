"""What every carrier's routes share: their collaborators, webhook routes, the signature check."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

from calls.store import CallStore
from carriers.base import Carrier, Kit, PublicUrls, WebhookRequest
from carriers.errors import CarrierUnavailable, SignatureInvalid
from cluster.commands import CommandBus
from telephony.inbound import Inbound
from voice.language import opening_language
from voice.media import MediaSocket
from voice.phrasebook import Say, phrases
from voice.transport import StreamDeps

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class CarrierDeps:
    """What a carrier's routes use besides its kit."""

    urls: PublicUrls  # the public URLs carriers sign and are sent to
    inbound: Inbound  # accepts inbound calls
    calls: CallStore  # status callbacks, outbound calls' records
    stream: StreamDeps  # the media loop (voice/transport.py)
    commands: CommandBus | None = None  # live-call commands (answering-machine results)


def websocket_transport(socket: MediaSocket, codec: FrameSerializer | None) -> BaseTransport:
    """The pipecat FastAPI WebSocket transport over a carrier's media socket, with ``codec``."""
    if not isinstance(socket, WebSocket) or codec is None:
        raise TypeError("a carrier's media socket is a FastAPI WebSocket, with its codec")
    params = FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=codec
    )
    return FastAPIWebsocketTransport(socket, params)


def webhook_route(r: APIRouter, path: str) -> Callable[[Endpoint], Endpoint]:
    """Register a carrier's webhook on ``r`` as a plain Starlette route (``POST path``).

    A webhook reads its own signed body and needs none of FastAPI's parameter injection; it
    stays out of the OpenAPI schema.
    """

    def add(endpoint: Endpoint) -> Endpoint:
        r.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
        return endpoint

    return add


async def verified(
    kit: Kit | None, carrier: Carrier, urls: PublicUrls, request: Request
) -> WebhookRequest:
    """The request, if ``kit``'s carrier signed it (for the public URL).

    Raises:
        CarrierUnavailable: the carrier is not configured (``kit`` is ``None``).
        SignatureInvalid: the signature does not verify.
    """
    if kit is None:
        raise CarrierUnavailable(f"{carrier} is not configured on this platform")
    # From the ASGI scope: cheaper than building ``request.url``.
    path, query = request.scope["path"], request.scope["query_string"].decode("latin-1")
    url = urls.public(path) + (f"?{query}" if query else "")
    req = WebhookRequest(request.method, url, await request.body(), dict(request.headers))
    verdict = kit.verifier.verify(req, time.time())
    if not verdict:
        log.warning(
            "webhook refused",
            extra={"carrier": str(carrier), "path": path, "reason": verdict.reason},
        )
        raise SignatureInvalid(verdict.reason)
    return req


def not_in_service(dialled: str) -> Say:
    """The phrases of the language of ``dialled``'s country, for a number no agent answers."""
    return phrases(opening_language(dialled)).say
