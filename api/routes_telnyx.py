"""Telnyx's doors into the platform: Call Control webhooks and the media WebSocket."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from api.voicemail import machine_detected
from api.webhooks import CarrierDeps, verified, webhook_route
from calls.events import CallEvent, CallEventType
from calls.state import CallState
from carriers.base import Carrier
from carriers.errors import CarrierUnavailable
from carriers.telnyx import media, webhook
from carriers.telnyx.control import TelnyxControl
from carriers.telnyx.kit import PATHS, TelnyxKit
from voice.transport import CLOSE_POLICY, first_message, run_stream, start_reader

log = logging.getLogger(__name__)
WEBHOOK_PATH = PATHS.voice
MEDIA_PATH = PATHS.media


def _configured(kit: TelnyxKit | None) -> TelnyxKit:
    if kit is None:
        raise CarrierUnavailable(
            "telnyx is not configured: set its BONMONIQ_TELNYX_* settings (README, Settings)"
        )
    return kit


def router(kit: TelnyxKit | None, deps: CarrierDeps) -> APIRouter:
    """Telnyx's routes, for ``kit``'s account (``None``: Telnyx is not configured).

    A repeated delivery of an event is applied once (the call store remembers the events).
    """
    r = APIRouter(tags=["carrier: telnyx"])

    @webhook_route(r, WEBHOOK_PATH)
    async def events(request: Request) -> Response:
        control = _configured(kit).control
        req = await verified(kit, Carrier.TELNYX, deps.urls, request)
        now = time.time()
        event = webhook.parse(req.body)
        if not await deps.calls.first_delivery(webhook.CARRIER, "event", event.id):
            return Response(status_code=200)  # a repeat delivery: applied once already
        try:
            await _apply(deps, control, event, now)
        except Exception:
            await deps.calls.forget_delivery(webhook.CARRIER, "event", event.id)  # Telnyx retries
            raise
        return Response(status_code=200)

    @r.websocket(MEDIA_PATH)
    async def media_stream(ws: WebSocket) -> None:
        if kit is None:
            await ws.close(code=CLOSE_POLICY)
            return
        start = await first_message(ws, start_reader(media.parse_message, media.parse_start))
        if start is None:
            return
        await run_stream(
            deps.stream,
            ws,
            start,
            webhook.CARRIER,
            lambda on_invalid: media.TelnyxMediaCodec(start.stream_id, on_invalid=on_invalid),
            hang_up=kit.control.hang_up,
        )

    return r


async def _apply(
    deps: CarrierDeps, control: TelnyxControl, event: webhook.Event, now: float
) -> None:
    """One event's effect: answer (or refuse) a new call, or move a call's state."""
    if event.type == "call.initiated" and event.payload.get("direction") == "incoming":
        accepted = await deps.inbound.accept(webhook.inbound(event), now)
        if not accepted.created:
            return
        if accepted.busy:
            await control.reject(event.call_control_id)
            return
        if accepted.route is not None:
            stream_url = deps.urls.public_ws(MEDIA_PATH)
            await control.answer(event.call_control_id, stream_url, {"call_id": accepted.call_id})
            return
        record = await deps.calls.get(accepted.call_id)
        if record is not None and record.state is CallState.REJECTED:
            await control.hang_up(event.call_control_id)
        return
    transfer_of = event.client_state.get("transfer_of")
    if transfer_of and event.type in ("call.bridged", "call.hangup"):
        if event.type == "call.bridged" or event.call_control_id != transfer_of:
            await _transfer_leg(deps, control, event, transfer_of, now)
            return
    detection = webhook.machine_detection(event)
    if detection is not None:
        await machine_detected(deps, webhook.CARRIER, detection, now)
        return
    update = webhook.status(event)
    if update is not None:
        await deps.calls.apply_status(webhook.CARRIER, update, now)


#: The dedupe kind under which a transfer's bridging is remembered (per original call).
_BRIDGED = "transfer-bridged"


async def _transfer_leg(
    deps: CarrierDeps,
    control: TelnyxControl,
    event: webhook.Event,
    transfer_of: str,
    now: float,
) -> None:
    """An event of a transfer's leg to the person (``client_state`` of ``actions/transfer``).

    ``call.bridged``: the person took the call. The leg's ``call.hangup`` with no bridging
    before: the transfer failed and Telnyx keeps the original call up, the caller alone on
    it; it is hung up here and the failure recorded.
    """
    if event.type == "call.bridged":
        await deps.calls.first_delivery(webhook.CARRIER, _BRIDGED, transfer_of)
        return
    if not await deps.calls.first_delivery(webhook.CARRIER, _BRIDGED, transfer_of):
        return  # bridged: the original call ends with its own hang-up
    call_id = event.client_state.get("call_id", "")
    if not call_id or await deps.calls.by_carrier_id(webhook.CARRIER, transfer_of) != call_id:
        log.warning("transfer leg of an unknown call hung up: ignored")
        return
    cause = str(event.payload.get("hangup_cause", "unspecified"))[:40]
    log.warning("transfer leg failed: the original call is hung up", extra={"cause": cause})
    try:
        await control.hang_up(transfer_of)
    except Exception:
        await deps.calls.forget_delivery(webhook.CARRIER, _BRIDGED, transfer_of)  # retried
        raise
    await deps.calls.add_event(
        CallEvent(CallEventType.TRANSFER_FAILED, call_id, now, {"cause": cause, "by": "carrier"})
    )
