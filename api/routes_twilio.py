"""Twilio's doors into the platform: the voice and status webhooks and the media WebSocket."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from api.voicemail import machine_detected
from api.webhooks import CarrierDeps, not_in_service, verified, webhook_route
from carriers.errors import CarrierUnavailable, SignatureInvalid, WebhookMalformed
from carriers.twilio import media, signature, webhook
from carriers.twilio.kit import AMD_PATH, OUTBOUND_PATH, PATHS, TwilioKit
from voice.transport import CLOSE_POLICY, first_message, run_stream, start_reader

log = logging.getLogger(__name__)
VOICE_PATH = PATHS.voice
STATUS_PATH = PATHS.status
MEDIA_PATH = PATHS.media


def _twiml(xml: str) -> Response:
    return Response(xml, media_type="application/xml")


def router(kit: TwilioKit | None, deps: CarrierDeps) -> APIRouter:
    """Twilio's routes, for ``kit``'s account (``None``: Twilio is not configured)."""
    r = APIRouter(tags=["carrier: twilio"])

    async def verified_form(request: Request) -> dict[str, str]:
        """Check the signature against the public URL; the form, or :class:`SignatureInvalid`."""
        if kit is None:
            raise CarrierUnavailable(
                "Twilio is not configured: set BONMONIQ_TWILIO_ACCOUNT_SID and _AUTH_TOKEN"
            )
        req = await verified(kit, kit.carrier, deps.urls, request)
        try:
            form = dict(parse_qsl(req.body.decode(), keep_blank_values=True))
        except UnicodeDecodeError as e:
            raise WebhookMalformed("form body is not UTF-8") from e
        if form.get("AccountSid") != kit.account.account_sid:
            log.warning("webhook for another account", extra={"path": request.url.path})
            raise SignatureInvalid("AccountSid does not match this platform's account")
        return form

    def stream_twiml(parameters: dict[str, str]) -> Response:
        return _twiml(
            webhook.twiml_stream(
                deps.urls.public_ws(MEDIA_PATH), parameters, deps.urls.public(STATUS_PATH)
            )
        )

    @webhook_route(r, VOICE_PATH)
    async def voice(request: Request) -> Response:
        form = await verified_form(request)
        inbound = webhook.parse_voice(form)
        accepted = await deps.inbound.accept(inbound, time.time())
        found = accepted.route
        if accepted.busy:
            return _twiml(webhook.twiml_busy())
        if found is None:
            say = not_in_service(inbound.to_number)
            return _twiml(webhook.twiml_apology(say.not_in_service, say.locale))
        return stream_twiml(
            {"call_id": accepted.call_id, "tenant": found.tenant, "agent": found.agent.name}
        )

    @r.post(OUTBOUND_PATH, include_in_schema=False)
    async def outbound(request: Request, call_id: str) -> Response:
        """The answered outbound call asks what to do: stream it to us."""
        form = await verified_form(request)
        record = await deps.calls.get(call_id)
        if record is None or record.carrier_call_id != form.get("CallSid"):
            raise WebhookMalformed("no outbound call of ours has this CallSid")
        return stream_twiml({"call_id": call_id, "tenant": record.tenant, "agent": record.agent})

    @webhook_route(r, STATUS_PATH)
    async def status(request: Request) -> Response:
        form = await verified_form(request)
        if "StreamEvent" in form:
            # Stream status callback: the call's own status callbacks tell us the rest.
            log.info("stream status", extra={"stream_event": form.get("StreamEvent")})
            return Response(status_code=204)
        update = webhook.parse_status(form)
        call_id = await deps.calls.apply_status("twilio", update, time.time())
        log.info(
            "status callback",
            extra={"call_id": call_id, "status": update.status, "applied": call_id is not None},
        )
        return Response(status_code=204)

    @webhook_route(r, AMD_PATH)
    async def amd(request: Request) -> Response:
        """Asynchronous answering-machine detection: ``AnsweredBy`` of an outbound call."""
        form = await verified_form(request)
        detection = webhook.parse_amd(form)
        await machine_detected(deps, webhook.CARRIER, detection, time.time())
        return Response(status_code=204)

    @r.websocket(MEDIA_PATH)
    async def media_stream(ws: WebSocket) -> None:
        headers = {k.lower(): v for k, v in ws.headers.items()}
        url = deps.urls.public_ws(MEDIA_PATH)
        if kit is None:
            await ws.close(code=CLOSE_POLICY)
            return
        verdict = signature.verify_websocket(url, headers, kit.account.auth_token)
        if not verdict:
            log.warning("media upgrade refused", extra={"reason": verdict.reason})
            await ws.close(code=CLOSE_POLICY)  # before accept: an HTTP 403 to the upgrade
            return
        start = await first_message(ws, start_reader(media.parse_message, media.parse_start))
        if start is None:
            return
        # Closing the stream is Twilio's hang-up: no TwiML follows <Connect>, so the call ends.
        await run_stream(
            deps.stream,
            ws,
            start,
            webhook.CARRIER,
            lambda on_invalid: media.TwilioMediaCodec(start.stream_id, on_invalid=on_invalid),
        )

    return r


__all__ = ["AMD_PATH", "MEDIA_PATH", "STATUS_PATH", "VOICE_PATH", "router"]
