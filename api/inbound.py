"""What every carrier's routes share: accepting an inbound call, and running its media stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from pipecat.serializers.base_serializer import FrameSerializer
from starlette.websockets import WebSocketDisconnect

from api.admission import member
from api.platform import Platform
from carriers.base import InboundCall, StreamStart, WebhookRequest
from carriers.errors import CarrierUnavailable, MediaMalformed, SignatureInvalid
from routing import keys
from routing.directory import Route
from routing.errors import AgentNotFound, InvalidNumber, RouteRefused
from routing.policy import Carrier, Decision, Purpose, route
from voice.calls import FINAL_STATES, STATE_RANK
from voice.events import current_call_id
from voice.session import CallSession

log = logging.getLogger(__name__)
#: WebSocket close codes: policy violation (unknown or unauthorised stream), bad data.
CLOSE_POLICY = 1008
CLOSE_BAD_DATA = 1007
START_TIMEOUT_S = 10.0
Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


@dataclass(frozen=True)
class Accepted:
    """The outcome of an inbound webhook: answer ``route``, or refuse (``route`` is None).

    ``busy``: refused because a cap on calls in progress is reached; the carrier's busy answer.
    """

    call_id: str
    created: bool
    route: Route | None
    decision: Decision | None
    refusal: str | None
    busy: bool = False


def webhook_route(r: APIRouter, path: str) -> Callable[[Endpoint], Endpoint]:
    """Register a carrier's webhook on ``r`` as a plain Starlette route (``POST path``).

    A webhook reads its own signed body and needs none of FastAPI's parameter injection, which
    took a tenth of the time of each request; it stays out of the OpenAPI schema.
    """

    def add(endpoint: Endpoint) -> Endpoint:
        r.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
        return endpoint

    return add


async def verified(platform: Platform, carrier: Carrier, request: Request) -> WebhookRequest:
    """The request, if the carrier signed it (for the public URL); :class:`SignatureInvalid`."""
    verifier = platform.verifiers.get(carrier)
    if verifier is None:
        raise CarrierUnavailable(f"{carrier} is not configured on this platform")
    # From the ASGI scope: building ``request.url`` cost 8% of a webhook's time.
    path, query = request.scope["path"], request.scope["query_string"].decode("latin-1")
    url = platform.settings.public(path) + (f"?{query}" if query else "")
    req = WebhookRequest(request.method, url, await request.body(), dict(request.headers))
    verdict = verifier.verify(req, time.time())
    if not verdict:
        log.warning(
            "webhook refused",
            extra={"carrier": str(carrier), "path": path, "reason": verdict.reason},
        )
        raise SignatureInvalid(verdict.reason)
    return req


async def accept(platform: Platform, inbound: InboundCall, now: float) -> Accepted:
    """Look up the agent, apply the routing policy, record the call once."""
    found = await platform.directory.lookup(inbound.to_number)
    decision: Decision | None = None
    refusal: str | None = None
    try:
        decision = route(
            inbound.to_number, Purpose.INBOUND, platform.policy, platform.health(now), now,
            holder=Carrier(inbound.carrier),
        )  # fmt: skip
    except (RouteRefused, InvalidNumber) as e:
        refusal = str(e)
    busy = None
    if found is not None and refusal is None:
        busy = await platform.admission.admit(
            found.tenant, member(inbound.carrier, inbound.carrier_call_id), now
        )
        if busy is not None:
            refusal = f"busy: {busy.limit} reached"
    admitted = found is not None and busy is None and refusal is None
    try:
        call_id, created, state = await platform.calls.open_inbound(
            inbound, found, now, decision.as_metadata() if decision else None, refusal
        )
    except BaseException:
        if admitted and found is not None:  # nothing was recorded: the place goes back
            await platform.admission.release(
                found.tenant, member(inbound.carrier, inbound.carrier_call_id)
            )
        raise
    answer = found is not None and state == "ringing"
    if admitted and found is not None and state in FINAL_STATES:
        # admitted, but the call is already over (a final status came first): not counted.
        # A repeated webhook of a call in progress keeps its place.
        await platform.admission.release(
            found.tenant, member(inbound.carrier, inbound.carrier_call_id)
        )
    token = current_call_id.set(call_id)
    try:
        if busy is not None:
            log.warning("inbound call refused: busy", extra={"limit": busy.limit})
        elif refusal:
            log.warning("inbound call refused by routing", extra={"reason": refusal})
        elif not found:
            log.warning("call to a number without agent", extra={"to": inbound.to_number})
        elif created and answer and decision:
            log.info("inbound call", extra={"agent": found.agent.name, **decision.as_metadata()})
            # Synthesize the fixed phrases now, without holding up the carrier's webhook.
            platform.prepare(found.agent)
        elif not created:
            log.info("duplicate inbound webhook: same answer, nothing new stored")
    finally:
        current_call_id.reset(token)
    return Accepted(
        call_id, created, found if answer else None, decision, refusal,
        busy=busy is not None and not answer,
    )  # fmt: skip


def start_reader(
    parse_message: Callable[[str], dict[str, Any]],
    parse_start: Callable[[dict[str, Any]], StreamStart],
) -> Callable[[WebSocket], Awaitable[StreamStart]]:
    """A reader of ``connected`` then ``start`` (how Twilio and Telnyx open a stream)."""

    async def read(ws: WebSocket) -> StreamStart:
        for _ in range(3):
            message = parse_message(await ws.receive_text())
            if message["event"] == "start":
                return parse_start(message)
            if message["event"] != "connected":
                raise MediaMalformed(f"{message['event']} before start")
        raise MediaMalformed("no start message")

    return read


async def first_message(ws: WebSocket, read: Callable[[WebSocket], Awaitable[T]]) -> T | None:
    """Accept the socket and ``read`` its opening message(s); on a protocol error close it.

    ``None`` when the stream was refused (bad data: close 1007) or the peer went away.
    """
    await ws.accept()
    try:
        return await asyncio.wait_for(read(ws), START_TIMEOUT_S)
    except (MediaMalformed, TimeoutError) as e:
        reason = str(e) or "no start message in time"
        log.warning("media stream refused", extra={"reason": reason})
        await ws.close(code=CLOSE_BAD_DATA, reason=reason[:120])
    except WebSocketDisconnect:
        pass
    return None


async def run_stream(
    platform: Platform,
    ws: WebSocket,
    start: StreamStart,
    carrier: str,
    make_codec: Callable[[Callable[[str], None]], FrameSerializer],
    *,
    keepalive: str | None = None,
    hang_up: Callable[[str], Awaitable[None]] | None = None,
    on_attached: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Check the stream belongs to a live call of ours, then run the call's pipeline on it."""
    call_id = start.parameters.get("call_id", "")
    record = await platform.calls.get(call_id) if call_id else None
    if record is None or (record.carrier, record.carrier_call_id) != (
        carrier,
        start.carrier_call_id,
    ):
        log.warning("media for an unknown call", extra={"carrier_call_id": start.carrier_call_id})
        await ws.close(code=CLOSE_POLICY, reason="unknown stream")
        return
    token = current_call_id.set(call_id)
    who = member(record.carrier, record.carrier_call_id)
    attached = False
    try:
        if STATE_RANK.get(record.state, 0) >= 3:
            log.warning("media for a finished call", extra={"state": record.state})
            await ws.close(code=CLOSE_POLICY, reason="call is over")
            return
        if not await platform.redis.hsetnx(keys.call(call_id), "stream_id", start.stream_id):
            log.warning("second media stream for a call refused")
            await ws.close(code=CLOSE_POLICY, reason="stream already attached")
            return
        # Counted in this process until the session ends (outbound calls too).
        platform.admission.attach(who)
        attached = True
        try:
            agent = await platform.directory.get_agent_by_id(record.agent, record.tenant)
        except AgentNotFound:
            log.error("agent of the call disappeared", extra={"agent": record.agent})
            await ws.close(code=CLOSE_POLICY, reason="agent unavailable")
            return
        # The announcement plays at once; the other phrases are needed only after it.
        await platform.engines.phrase(agent.announcement.strip())
        platform.prepare(agent)
        if on_attached is not None:
            await on_attached()
        session: CallSession | None = None

        def on_invalid(reason: str) -> None:
            if session is not None:
                session.media_rejected(reason)

        async def carrier_hang_up() -> None:
            if hang_up is not None:
                await hang_up(record.carrier_call_id)

        async def objected(how: str) -> None:
            await platform.audit.append(
                record.tenant, at=time.time(), key_id="caller", action="recording.objected",
                target=record.call_id, address="", request_id="", detail={"how": how},
            )  # fmt: skip

        session = CallSession(
            ws, make_codec(on_invalid), record, agent, platform.engines, platform.calls,
            platform.call_config, keepalive=keepalive,
            hang_up=carrier_hang_up if hang_up else None,
            objects=platform.objects, on_objection=objected,
        )  # fmt: skip
        await session.run()
    finally:
        if attached:
            await platform.admission.release(record.tenant, who)
        current_call_id.reset(token)
