"""A carrier's media WebSocket into a call: opening messages, checks, then the call's pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fastapi import WebSocket
from pipecat.serializers.base_serializer import FrameSerializer
from starlette.websockets import WebSocketDisconnect

from calls.events import current_call_id
from calls.store import STATE_RANK, CallRecord, CallStore, member
from carriers.base import StreamStart
from carriers.errors import MediaMalformed
from recordings.objects import EncryptedObjects
from routing.directory import Agent, Directory
from routing.errors import AgentNotFound
from voice.engines import Engines
from voice.session import CallConfig, CallSession

log = logging.getLogger(__name__)
#: WebSocket close codes: policy violation (unknown or unauthorised stream), bad data.
CLOSE_POLICY = 1008
CLOSE_BAD_DATA = 1007
START_TIMEOUT_S = 10.0
T = TypeVar("T")


class Seats(Protocol):
    """The per-process and per-tenant count of calls in progress (telephony's admission)."""

    def attach(self, who: str) -> None:
        """Count ``who`` here until released."""

    async def release(self, tenant: str, who: str) -> None:
        """Give ``who``'s place back."""


@dataclass(frozen=True)
class StreamDeps:
    """What a media stream needs from the platform."""

    calls: CallStore
    directory: Directory
    engines: Engines
    config: CallConfig
    seats: Seats
    prepare: Callable[[Agent], None]
    objects: EncryptedObjects | None = None
    #: Told when a caller objects to the recording (``record``, how): the audit entry.
    on_objection: Callable[[CallRecord, str], Awaitable[None]] | None = None


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
    deps: StreamDeps,
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
    record = await deps.calls.get(call_id) if call_id else None
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
        if not await deps.calls.claim_stream(call_id, start.stream_id):
            log.warning("second media stream for a call refused")
            await ws.close(code=CLOSE_POLICY, reason="stream already attached")
            return
        # Counted in this process until the session ends (outbound calls too).
        deps.seats.attach(who)
        attached = True
        try:
            agent = await deps.directory.get_agent_by_id(record.agent, record.tenant)
        except AgentNotFound:
            log.error("agent of the call disappeared", extra={"agent": record.agent})
            await ws.close(code=CLOSE_POLICY, reason="agent unavailable")
            return
        # The announcement plays at once; the other phrases are needed only after it.
        await deps.engines.phrase(agent.announcement.strip())
        deps.prepare(agent)
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
            if deps.on_objection is not None:
                await deps.on_objection(record, how)

        session = CallSession(
            ws, make_codec(on_invalid), record, agent, deps.engines, deps.calls,
            deps.config, keepalive=keepalive,
            hang_up=carrier_hang_up if hang_up else None,
            objects=deps.objects, on_objection=objected,
        )  # fmt: skip
        await session.run()
    finally:
        if attached:
            await deps.seats.release(record.tenant, who)
        current_call_id.reset(token)
