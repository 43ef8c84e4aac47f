"""A carrier's media WebSocket into a call: opening messages, checks, then the call's pipeline.

The HTTP edge verifies and hands over the socket (:class:`~voice.media.MediaSocket`); this
module reads the opening messages, checks that the stream belongs to a live call of ours, and
runs the call's :class:`~voice.session.CallSession` on pipecat's WebSocket transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pipecat.serializers.base_serializer import FrameSerializer

from calls.events import current_call_id
from calls.records import CallRecord, member
from carriers.base import StreamStart
from carriers.errors import MediaMalformed
from routing.directory import Agent, Directory
from routing.errors import AgentNotFound
from voice.announcement import announcement_for, dialled
from voice.engines import PHONE_RATE
from voice.errors import PeerGone
from voice.language import CallLanguage
from voice.media import CarrierLink, MediaSocket, TransportFactory
from voice.prompt import voice_of
from voice.session import CallSession, SessionDeps

log = logging.getLogger(__name__)
#: WebSocket close codes: policy violation (unknown or unauthorised stream), bad data.
CLOSE_POLICY = 1008
CLOSE_BAD_DATA = 1007
START_TIMEOUT_S = 10.0
T = TypeVar("T")


class LiveCall(Protocol):
    """What may be done to a running call from outside it (a live-call command)."""

    @property
    def media_over(self) -> bool:
        """The call's media has ended (what is left is its bookkeeping): no command applies."""

    async def hang_up(self, by: str) -> None:
        """The agent says its farewell, then the call ends (the carrier hangs up)."""

    async def stop_recording(self, how: str) -> bool:
        """Stop recording as on the caller's objection; ``False`` when nothing was recorded."""

    async def transfer(self, by: str) -> str:
        """Admit a transfer to the agent's number: ``transferring`` (``voice.errors`` if not).

        The hand-over itself then runs in the call.
        """

    async def voicemail(self) -> str:
        """Act on the carrier's answering-machine detection as the call's record says."""


class LiveRegistry(Protocol):
    """Where the running calls of this process are found by id (the cluster's commands)."""

    async def attach(self, call_id: str, call: LiveCall) -> None:
        """``call`` runs here from now on."""

    async def detach(self, call_id: str) -> None:
        """The call has ended here."""


class Seats(Protocol):
    """The per-process and per-tenant count of calls in progress (telephony's admission)."""

    def attach(self, who: str) -> None:
        """Count ``who`` here until released."""

    async def release(self, tenant: str, who: str) -> None:
        """Give ``who``'s place back."""


@dataclass(frozen=True)
class StreamDeps:
    """What a media stream needs from the platform: the sessions' and the call's checks."""

    session: SessionDeps
    directory: Directory
    seats: Seats
    prepare: Callable[[Agent], None]
    #: The HTTP edge's pipecat transport over the carrier's socket.
    transport: TransportFactory
    #: Told when a caller objects to the recording (``record``, how): the audit entry.
    on_objection: Callable[[CallRecord, str], Awaitable[None]] | None = None
    #: Told of each session while it runs, so commands reach it (hang up, stop recording).
    live: LiveRegistry | None = None


class _Opening:
    """The socket while its opening messages are read: any failure reading is the peer gone."""

    def __init__(self, socket: MediaSocket) -> None:
        self._socket = socket

    async def accept(self) -> None:
        await self._socket.accept()

    async def receive_text(self) -> str:
        try:
            return await self._socket.receive_text()
        except Exception as e:  # the framework's disconnect, whatever its type
            log.info("media stream closed before its start", extra={"reason": type(e).__name__})
            raise PeerGone(str(e)) from e

    async def send_text(self, data: str) -> None:
        await self._socket.send_text(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._socket.close(code, reason)


def start_reader(
    parse_message: Callable[[str], dict[str, Any]],
    parse_start: Callable[[dict[str, Any]], StreamStart],
) -> Callable[[MediaSocket], Awaitable[StreamStart]]:
    """A reader of ``connected`` then ``start`` (how Twilio and Telnyx open a stream)."""

    async def read(ws: MediaSocket) -> StreamStart:
        for _ in range(3):
            message = parse_message(await ws.receive_text())
            if message["event"] == "start":
                return parse_start(message)
            if message["event"] != "connected":
                raise MediaMalformed(f"{message['event']} before start")
        raise MediaMalformed("no start message")

    return read


async def first_message(ws: MediaSocket, read: Callable[[MediaSocket], Awaitable[T]]) -> T | None:
    """Accept the socket and ``read`` its opening message(s); on a protocol error close it.

    ``None`` when the stream was refused (bad data: close 1007) or the peer went away.
    """
    await ws.accept()
    try:
        return await asyncio.wait_for(read(_Opening(ws)), START_TIMEOUT_S)
    except (MediaMalformed, TimeoutError) as e:
        reason = str(e) or "no start message in time"
        log.warning("media stream refused", extra={"reason": reason})
        await ws.close(code=CLOSE_BAD_DATA, reason=reason[:120])
    except PeerGone:
        pass
    return None


async def run_stream(
    deps: StreamDeps,
    ws: MediaSocket,
    start: StreamStart,
    carrier: str,
    make_codec: Callable[[Callable[[str], None]], FrameSerializer | None],
    *,
    keepalive: str | None = None,
    rate: int = PHONE_RATE,
    transfers: bool = True,
    hang_up: Callable[[str], Awaitable[None]] | None = None,
    on_attached: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Check the stream belongs to a live call of ours, then run the call's pipeline on it."""
    calls = deps.session.store
    call_id = start.parameters.get("call_id", "")
    record = await calls.get(call_id) if call_id else None
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
        if record.state.is_final:
            log.warning("media for a finished call", extra={"state": record.state})
            await ws.close(code=CLOSE_POLICY, reason="call is over")
            return
        if not await calls.claim_stream(call_id, start.stream_id):
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
        number = dialled(record.direction, record.from_number, record.to_number)
        engines = deps.session.engines
        opening = CallLanguage(agent.language, number).opening  # an auto agent's: the country's
        try:
            await engines.phrase(
                announcement_for(agent.announcement, opening, number),
                rate,
                voice_of(engines, agent, opening),
            )
        except Exception:  # the session tries again, and ends the call politely without it
            log.exception("the announcement could not be synthesized ahead of the call")
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

        codec = make_codec(on_invalid)
        link = CarrierLink(
            ws, codec, keepalive, carrier_hang_up if hang_up else None, rate, transfers
        )
        transport = deps.transport(ws, codec)
        session = CallSession(transport, record, agent, deps.session, link, objected)
        if deps.live is not None:
            await deps.live.attach(call_id, session)
        try:
            await session.run()
        finally:
            if deps.live is not None:
                await deps.live.detach(call_id)
    finally:
        if attached:
            await deps.seats.release(record.tenant, who)
        current_call_id.reset(token)
