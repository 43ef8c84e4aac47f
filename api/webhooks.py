"""Twilio's doors into the platform: the voice and status webhooks and the media WebSocket."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from api.platform import Platform
from carriers.base import StreamStart
from carriers.errors import MediaMalformed, SignatureInvalid, WebhookMalformed
from carriers.twilio import media, signature, webhook
from routing import keys
from routing.errors import AgentNotFound
from voice.calls import STATE_RANK
from voice.events import current_call_id
from voice.session import CallSession, prepare_phrases

log = logging.getLogger(__name__)
VOICE_PATH = "/webhooks/twilio/voice"
STATUS_PATH = "/webhooks/twilio/status"
MEDIA_PATH = "/media/twilio"
APOLOGY_UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."
_START_TIMEOUT_S = 10.0
#: WebSocket close codes: policy violation (unknown or unauthorised stream), bad data.
_CLOSE_POLICY = 1008
_CLOSE_BAD_DATA = 1007


def _twiml(xml: str) -> Response:
    return Response(xml, media_type="application/xml")


async def _verified_form(platform: Platform, request: Request) -> dict[str, str]:
    """Check the signature against the public URL; the form, or :class:`SignatureInvalid`."""
    body = await request.body()
    url = platform.settings.public(request.url.path)
    if request.url.query:
        url += "?" + request.url.query
    headers = {k.lower(): v for k, v in request.headers.items()}
    verdict = signature.verify_request(url, body, headers, platform.twilio_auth_token)
    if not verdict:
        log.warning("webhook refused", extra={"path": request.url.path, "reason": verdict.reason})
        raise SignatureInvalid(verdict.reason)
    try:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError as e:
        raise WebhookMalformed("form body is not UTF-8") from e
    if form.get("AccountSid") != platform.twilio_account_sid:
        log.warning("webhook for another account", extra={"path": request.url.path})
        raise SignatureInvalid("AccountSid does not match this platform's account")
    return form


def router(platform: Platform) -> APIRouter:
    """Routes bound to ``platform``."""
    r = APIRouter(tags=["carrier: twilio"])

    @r.post(VOICE_PATH, include_in_schema=False)
    async def voice(request: Request) -> Response:
        form = await _verified_form(platform, request)
        inbound = webhook.parse_voice(form)
        route = await platform.directory.lookup(inbound.to_number)
        call_id, created = await platform.calls.open_inbound(inbound, route, time.time())
        token = current_call_id.set(call_id)
        try:
            if route is None:
                log.warning("call to a number without agent", extra={"to": inbound.to_number})
                return _twiml(webhook.twiml_apology(APOLOGY_UNKNOWN_NUMBER))
            if created:
                log.info("inbound call", extra={"agent": route.agent.name, "tenant": route.tenant})
                await prepare_phrases(platform.engines, route.agent)
            else:
                log.info("duplicate voice webhook: same answer, nothing new stored")
            return _twiml(
                webhook.twiml_stream(
                    platform.settings.public_ws(MEDIA_PATH),
                    {"call_id": call_id, "tenant": route.tenant, "agent": route.agent.name},
                    platform.settings.public(STATUS_PATH),
                )
            )
        finally:
            current_call_id.reset(token)

    @r.post(STATUS_PATH, include_in_schema=False)
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
        verdict = signature.verify_websocket(url, headers, platform.twilio_auth_token)
        if not verdict:
            log.warning("media upgrade refused", extra={"reason": verdict.reason})
            await ws.close(code=_CLOSE_POLICY)  # before accept: an HTTP 403 to the upgrade
            return
        await ws.accept()
        try:
            start = await asyncio.wait_for(_read_start(ws), _START_TIMEOUT_S)
        except (MediaMalformed, TimeoutError) as e:
            reason = str(e) or "no start message in time"
            log.warning("media stream refused", extra={"reason": reason})
            await ws.close(code=_CLOSE_BAD_DATA, reason=reason[:120])
            return
        except WebSocketDisconnect:
            return
        await _run_stream(platform, ws, start)

    return r


async def _read_start(ws: WebSocket) -> StreamStart:
    """Read ``connected`` then ``start``; anything else first is a protocol error."""
    for _ in range(3):
        message = media.parse_message(await ws.receive_text())
        if message["event"] == "start":
            return media.parse_start(message)
        if message["event"] != "connected":
            raise MediaMalformed(f"{message['event']} before start")
    raise MediaMalformed("no start message")


async def _run_stream(platform: Platform, ws: WebSocket, start: StreamStart) -> None:
    call_id = start.parameters.get("call_id", "")
    record = await platform.calls.get(call_id) if call_id else None
    if record is None or record.carrier_call_id != start.carrier_call_id:
        log.warning("media for an unknown call", extra={"call_sid": start.carrier_call_id})
        await ws.close(code=_CLOSE_POLICY, reason="unknown stream")
        return
    token = current_call_id.set(call_id)
    try:
        if STATE_RANK.get(record.state, 0) >= 3:
            log.warning("media for a finished call", extra={"state": record.state})
            await ws.close(code=_CLOSE_POLICY, reason="call is over")
            return
        if not await platform.redis.hsetnx(keys.call(call_id), "stream_id", start.stream_id):
            log.warning("second media stream for a call refused")
            await ws.close(code=_CLOSE_POLICY, reason="stream already attached")
            return
        try:
            agent = await platform.directory.get_agent(record.agent, record.tenant)
        except AgentNotFound:
            log.error("agent of the call disappeared", extra={"agent": record.agent})
            await ws.close(code=_CLOSE_POLICY, reason="agent unavailable")
            return
        await prepare_phrases(platform.engines, agent)
        session: CallSession | None = None

        def on_invalid(reason: str) -> None:
            if session is not None:
                session.media_rejected(reason)

        codec = media.TwilioMediaCodec(start.stream_id, on_invalid=on_invalid)
        session = CallSession(
            ws, codec, record, agent, platform.engines, platform.calls, platform.call_config
        )
        await session.run()
    finally:
        current_call_id.reset(token)


__all__ = ["MEDIA_PATH", "STATUS_PATH", "VOICE_PATH", "router"]
