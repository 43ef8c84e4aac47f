"""Sinch's doors into the platform: Voice API v1 callbacks and the stream WebSocket."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response

from api.voicemail import machine_detected
from api.webhooks import CarrierDeps, not_in_service, verified, webhook_route
from carriers.base import Carrier, StreamStart, carrier_time_limit
from carriers.errors import CarrierUnavailable
from carriers.sinch import media, webhook
from carriers.sinch.kit import PATHS, SinchKit
from voice.media import MediaSocket
from voice.transport import CLOSE_POLICY, first_message, run_stream

log = logging.getLogger(__name__)
CALLBACK_PATH = PATHS.voice
MEDIA_PATH = PATHS.media


def router(kit: SinchKit | None, deps: CarrierDeps, inbound_max_seconds: int) -> APIRouter:
    """Sinch's routes, for ``kit``'s application (``None``: Sinch is not configured).

    An inbound call is given ``inbound_max_seconds`` plus the carriers' grace as Sinch's own
    hard limit.
    """
    r = APIRouter(tags=["carrier: sinch"])

    @webhook_route(r, CALLBACK_PATH)
    async def callback(request: Request) -> Response:
        if kit is None:
            raise CarrierUnavailable(
                "sinch is not configured: set its BONMONIQ_SINCH_* settings (README, Settings)"
            )
        # Sinch signs the path it called: the public one, whatever a proxy rewrote.
        req = await verified(kit, Carrier.SINCH, deps.urls, request)
        now = time.time()
        cb = webhook.parse(req.body)
        if cb.event == "ice":
            accepted = await deps.inbound.accept(webhook.inbound(cb), now)
            if accepted.busy:
                return JSONResponse(webhook.svaml_busy())
            if accepted.route is None:
                say = not_in_service(webhook.inbound(cb).to_number)
                return JSONResponse(webhook.svaml_say_and_hang_up(say.not_in_service, say.locale))
            # Sinch's own hard limit, in case the platform cannot end the call itself.
            limit = carrier_time_limit(inbound_max_seconds)
            return JSONResponse(
                webhook.svaml_connect_stream(
                    deps.urls.public_ws(MEDIA_PATH),
                    {"call_id": accepted.call_id},
                    max_seconds=limit,
                )
            )
        update = webhook.status(cb)
        if update is not None:
            await deps.calls.apply_status(webhook.CARRIER, update, now)
        detection = webhook.machine_detection(cb)
        if detection is not None:
            await machine_detected(deps, webhook.CARRIER, detection, now)
        if cb.event in ("ace", "pie"):
            return JSONResponse(webhook.svaml_continue())
        return Response(status_code=200)

    @r.websocket(MEDIA_PATH)
    async def media_stream(ws: WebSocket) -> None:
        if kit is None:
            await ws.close(code=CLOSE_POLICY)
            return
        opened = await first_message(ws, _read_connect)
        if opened is None:
            return
        start, rate = opened

        async def answer() -> None:
            await ws.send_text(media.ANSWER)

        await run_stream(
            deps.stream,
            ws,
            start,
            webhook.CARRIER,
            lambda on_invalid: media.SinchMediaCodec(rate, on_invalid=on_invalid),
            keepalive=media.HEARTBEAT,
            hang_up=kit.control.hang_up,
            on_attached=answer,
        )

    return r


async def _read_connect(ws: MediaSocket) -> tuple[StreamStart, int]:
    """The ``connect`` command: the stream and its sample rate."""
    return media.parse_connect(await ws.receive_text())
