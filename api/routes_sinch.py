"""Sinch's doors into the platform: Voice API v1 callbacks and the stream WebSocket."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response

from api.webhooks import verified, webhook_route
from app.platform import Platform
from calls.store import carrier_time_limit
from carriers.base import StreamStart
from carriers.errors import CarrierUnavailable
from carriers.sinch import media, webhook
from carriers.sinch.control import SinchControl
from routing.policy import Carrier
from voice.transport import CLOSE_POLICY, first_message, run_stream

log = logging.getLogger(__name__)
CALLBACK_PATH = "/webhooks/sinch"
MEDIA_PATH = "/media/sinch"
APOLOGY_UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."


def router(platform: Platform) -> APIRouter:
    """Routes bound to ``platform``."""
    r = APIRouter(tags=["carrier: sinch"])

    @webhook_route(r, CALLBACK_PATH)
    async def callback(request: Request) -> Response:
        platform.control(Carrier.SINCH, SinchControl)
        # Sinch signs the path it called: the public one, whatever a proxy rewrote.
        req = await verified(platform, Carrier.SINCH, request)
        now = time.time()
        cb = webhook.parse(req.body)
        if cb.event == "ice":
            accepted = await platform.inbound.accept(webhook.inbound(cb), now)
            if accepted.busy:
                return JSONResponse(webhook.svaml_busy())
            if accepted.route is None:
                return JSONResponse(webhook.svaml_say_and_hang_up(APOLOGY_UNKNOWN_NUMBER))
            # Sinch's own hard limit, in case the platform cannot end the call itself.
            limit = carrier_time_limit(platform.call_config.max_seconds_of("inbound"))
            return JSONResponse(
                webhook.svaml_connect_stream(
                    platform.settings.public_ws(MEDIA_PATH),
                    {"call_id": accepted.call_id},
                    max_seconds=limit,
                )
            )
        update = webhook.status(cb)
        if update is not None:
            await platform.calls.apply_status(webhook.CARRIER, update, now)
        if cb.event in ("ace", "pie"):
            return JSONResponse(webhook.svaml_continue())
        return Response(status_code=200)

    @r.websocket(MEDIA_PATH)
    async def media_stream(ws: WebSocket) -> None:
        try:
            control = platform.control(Carrier.SINCH, SinchControl)
        except CarrierUnavailable:
            await ws.close(code=CLOSE_POLICY)
            return
        opened = await first_message(ws, _read_connect)
        if opened is None:
            return
        start, rate = opened

        async def answer() -> None:
            await ws.send_text(media.ANSWER)

        await run_stream(
            platform.stream_deps, ws, start, webhook.CARRIER,
            lambda on_invalid: media.SinchMediaCodec(rate, on_invalid=on_invalid),
            keepalive=media.HEARTBEAT, hang_up=control.hang_up, on_attached=answer,
        )  # fmt: skip

    return r


async def _read_connect(ws: WebSocket) -> tuple[StreamStart, int]:
    """The ``connect`` command: the stream and its sample rate."""
    return media.parse_connect(await ws.receive_text())
