"""Twilio's doors into the platform: the voice and status webhooks and the media WebSocket."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from api.webhooks import verified, webhook_route
from app.platform import Platform
from carriers.errors import CarrierUnavailable, SignatureInvalid, WebhookMalformed
from carriers.twilio import media, signature, webhook
from carriers.twilio.control import TwilioAccount
from routing.policy import Carrier
from voice.transport import CLOSE_POLICY, first_message, run_stream, start_reader

log = logging.getLogger(__name__)
VOICE_PATH = "/webhooks/twilio/voice"
STATUS_PATH = "/webhooks/twilio/status"
OUTBOUND_PATH = "/webhooks/twilio/outbound"
MEDIA_PATH = "/media/twilio"
APOLOGY_UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."


def _twiml(xml: str) -> Response:
    return Response(xml, media_type="application/xml")


def _account(platform: Platform) -> TwilioAccount:
    if platform.accounts.twilio is None:
        raise CarrierUnavailable(
            "Twilio is not configured: set BONMONIQ_TWILIO_ACCOUNT_SID and _AUTH_TOKEN"
        )
    return platform.accounts.twilio


async def _verified_form(platform: Platform, request: Request) -> dict[str, str]:
    """Check the signature against the public URL; the form, or :class:`SignatureInvalid`."""
    account = _account(platform)
    req = await verified(platform, Carrier.TWILIO, request)
    try:
        form = dict(parse_qsl(req.body.decode(), keep_blank_values=True))
    except UnicodeDecodeError as e:
        raise WebhookMalformed("form body is not UTF-8") from e
    if form.get("AccountSid") != account.account_sid:
        log.warning("webhook for another account", extra={"path": request.url.path})
        raise SignatureInvalid("AccountSid does not match this platform's account")
    return form


def router(platform: Platform) -> APIRouter:
    """Routes bound to ``platform``."""
    r = APIRouter(tags=["carrier: twilio"])

    @webhook_route(r, VOICE_PATH)
    async def voice(request: Request) -> Response:
        form = await _verified_form(platform, request)
        inbound = webhook.parse_voice(form)
        accepted = await platform.inbound.accept(inbound, time.time())
        found = accepted.route
        if accepted.busy:
            return _twiml(webhook.twiml_busy())
        if found is None:
            return _twiml(webhook.twiml_apology(APOLOGY_UNKNOWN_NUMBER))
        return _twiml(
            webhook.twiml_stream(
                platform.settings.public_ws(MEDIA_PATH),
                {"call_id": accepted.call_id, "tenant": found.tenant, "agent": found.agent.name},
                platform.settings.public(STATUS_PATH),
            )
        )

    @r.post(OUTBOUND_PATH, include_in_schema=False)
    async def outbound(request: Request, call_id: str) -> Response:
        """The answered outbound call asks what to do: stream it to us."""
        form = await _verified_form(platform, request)
        record = await platform.calls.get(call_id)
        if record is None or record.carrier_call_id != form.get("CallSid"):
            raise WebhookMalformed("no outbound call of ours has this CallSid")
        return _twiml(
            webhook.twiml_stream(
                platform.settings.public_ws(MEDIA_PATH),
                {"call_id": call_id, "tenant": record.tenant, "agent": record.agent},
                platform.settings.public(STATUS_PATH),
            )
        )

    @webhook_route(r, STATUS_PATH)
    async def status(request: Request) -> Response:
        form = await _verified_form(platform, request)
        if "StreamEvent" in form:
            # Stream status callback: the call's own status callbacks tell us the rest.
            log.info("stream status", extra={"stream_event": form.get("StreamEvent")})
            return Response(status_code=204)
        update = webhook.parse_status(form)
        call_id = await platform.calls.apply_status("twilio", update, time.time())
        log.info(
            "status callback",
            extra={"call_id": call_id, "status": update.status, "applied": call_id is not None},
        )
        return Response(status_code=204)

    @r.websocket(MEDIA_PATH)
    async def media_stream(ws: WebSocket) -> None:
        headers = {k.lower(): v for k, v in ws.headers.items()}
        url = platform.settings.public_ws(MEDIA_PATH)
        account = platform.accounts.twilio
        if account is None:
            await ws.close(code=CLOSE_POLICY)
            return
        verdict = signature.verify_websocket(url, headers, account.auth_token)
        if not verdict:
            log.warning("media upgrade refused", extra={"reason": verdict.reason})
            await ws.close(code=CLOSE_POLICY)  # before accept: an HTTP 403 to the upgrade
            return
        start = await first_message(ws, start_reader(media.parse_message, media.parse_start))
        if start is None:
            return
        # Closing the stream is Twilio's hang-up: no TwiML follows <Connect>, so the call ends.
        await run_stream(
            platform.stream_deps, ws, start, webhook.CARRIER,
            lambda on_invalid: media.TwilioMediaCodec(start.stream_id, on_invalid=on_invalid),
        )  # fmt: skip

    return r


__all__ = ["MEDIA_PATH", "STATUS_PATH", "VOICE_PATH", "router"]
