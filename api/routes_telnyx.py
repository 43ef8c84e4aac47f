"""Telnyx's doors into the platform: Call Control webhooks and the media WebSocket."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from api.webhooks import verified, webhook_route
from app.platform import Platform
from carriers.errors import CarrierUnavailable
from carriers.telnyx import media, webhook
from carriers.telnyx.control import TelnyxControl
from routing.policy import Carrier
from store import keys
from voice.transport import CLOSE_POLICY, first_message, run_stream, start_reader

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/webhooks/telnyx"
MEDIA_PATH = "/media/telnyx"


def router(platform: Platform) -> APIRouter:
    """Routes bound to ``platform``."""
    r = APIRouter(tags=["carrier: telnyx"])

    @webhook_route(r, WEBHOOK_PATH)
    async def events(request: Request) -> Response:
        control = platform.control(Carrier.TELNYX, TelnyxControl)
        req = await verified(platform, Carrier.TELNYX, request)
        now = time.time()
        event = webhook.parse(req.body)
        marker = keys.dedupe(webhook.CARRIER, "event", event.id)
        if not await platform.redis.set(marker, "1", nx=True, ex=keys.DEDUPE_TTL_S):
            return Response(status_code=200)  # a repeat delivery: applied once already
        try:
            await _apply(platform, control, event, now)
        except Exception:
            await platform.redis.delete(marker)  # let Telnyx's retry try again
            raise
        return Response(status_code=200)

    @r.websocket(MEDIA_PATH)
    async def media_stream(ws: WebSocket) -> None:
        try:
            control = platform.control(Carrier.TELNYX, TelnyxControl)
        except CarrierUnavailable:
            await ws.close(code=CLOSE_POLICY)
            return
        start = await first_message(ws, start_reader(media.parse_message, media.parse_start))
        if start is None:
            return
        await run_stream(
            platform.stream_deps, ws, start, webhook.CARRIER,
            lambda on_invalid: media.TelnyxMediaCodec(start.stream_id, on_invalid=on_invalid),
            hang_up=control.hang_up,
        )  # fmt: skip

    return r


async def _apply(
    platform: Platform, control: TelnyxControl, event: webhook.Event, now: float
) -> None:
    """One event's effect: answer (or refuse) a new call, or move a call's state."""
    if event.type == "call.initiated" and event.payload.get("direction") == "incoming":
        accepted = await platform.inbound.accept(webhook.inbound(event), now)
        if not accepted.created:
            return
        if accepted.busy:
            await control.reject(event.call_control_id)
            return
        if accepted.route is not None:
            stream_url = platform.settings.public_ws(MEDIA_PATH)
            await control.answer(event.call_control_id, stream_url, {"call_id": accepted.call_id})
            return
        record = await platform.calls.get(accepted.call_id)
        if record is not None and record.state == "rejected":
            await control.hang_up(event.call_control_id)
        return
    update = webhook.status(event)
    if update is not None:
        await platform.calls.apply_status(webhook.CARRIER, update, now)
