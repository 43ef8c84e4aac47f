"""Browser calls (WebRTC): short-lived tokens, and an offer answered by the agent's pipeline.

A tenant's key makes a token that lets a page place one call to one agent without holding the
key (single use, within its lifetime; only its digest is stored). An offer is admitted against
the caps like an inbound call, recorded once (channel ``webrtc``; the caller is its IP address,
sealed like a phone number), answered with an SDP answer, and run through the stream runner
(voice/transport.py ``run_stream``) once the peer connection is up: 16 kHz in, 24 kHz out. The
call ends when the page hangs up or the connection fails, or when the agent hangs up (the
connection is closed); ``completed`` once its media ran, ``failed`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_transport import BaseTransport
from redis.asyncio import Redis

from calls.events import current_call_id
from calls.records import member
from calls.state import CallState
from calls.store import CallStore
from carriers.base import InboundCall, StatusUpdate, StreamStart
from routing.directory import Agent, Directory, Route
from store import keys
from telephony.admission import Admission
from voice.errors import PeerGone
from voice.media import MediaSocket
from voice.transport import StreamDeps, run_stream

log = logging.getLogger(__name__)
CHANNEL = "webrtc"
#: The rate the agent's audio goes out at (Opus is wideband; the voices are 22.05 kHz).
WEB_RATE = 24000
TOKEN_PREFIX = "wrt_"
#: How long the browser has to complete ICE and DTLS once answered.
CONNECT_TIMEOUT_S = 30.0
#: How long a call whose connection went down may take to end by itself before it is cancelled.
GONE_GRACE_S = 5.0
MAX_SDP = 16384


class WebRtcRefused(Exception):
    """A browser call not placed: ``code`` (stable), ``status`` (HTTP) and why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        """``detail`` is for people and holds no personal data."""
        super().__init__(detail)
        self.status, self.code = status, code


class Peer(Protocol):
    """A browser's peer connection, answered (the SDP answer is ready)."""

    answer: str

    async def connected(self, timeout_s: float) -> bool:
        """Wait until ICE and DTLS are up; ``False`` if they fail or time out."""

    async def gone(self) -> None:
        """Return once the connection has failed or closed."""

    def transport(self, socket: MediaSocket, codec: FrameSerializer | None) -> BaseTransport:
        """Pipecat's transport over this connection (a :data:`voice.media.TransportFactory`)."""

    async def close(self) -> None:
        """Close the connection (idempotent)."""


#: Answers an SDP offer: the peer, or ``ValueError`` for an offer it cannot answer.
PeerFactory = Callable[[str], Awaitable[Peer]]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebRtcTokens:
    """Single-use tokens for one browser call to one agent, kept as digests in Redis."""

    def __init__(self, redis: Redis) -> None:
        """Tokens live in ``redis`` until used or expired."""
        self.redis = redis

    async def issue(self, tenant: str, agent_id: str, ttl_s: int) -> str:
        """A new token for a call to ``agent_id`` of ``tenant`` within ``ttl_s`` seconds."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        value = json.dumps({"tenant": tenant, "agent": agent_id})
        await self.redis.set(keys.webrtc_token(_digest(token)), value, ex=ttl_s)
        return token

    async def redeem(self, token: str, agent_id: str) -> str | None:
        """The tenant of ``token`` if it is live and for ``agent_id`` (it is used up), else None."""
        key = keys.webrtc_token(_digest(token))
        raw = await self.redis.get(key)
        if raw is None:
            return None
        held = json.loads(raw)
        if held.get("agent") != agent_id:
            return None
        # Whoever deletes it first places the call: a token never places two.
        return str(held["tenant"]) if await self.redis.delete(key) == 1 else None


class PeerSocket:
    """A peer connection as the stream runner's media socket: closing it ends the call."""

    def __init__(self, peer: Peer) -> None:
        """The socket of ``peer``."""
        self._peer = peer

    async def accept(self) -> None:
        """Nothing to accept: the connection is up."""

    async def receive_text(self) -> str:
        """A browser sends no text messages here."""
        raise PeerGone("a WebRTC call has no text messages")

    async def send_text(self, data: str) -> None:
        """Nothing to send: WebRTC needs no keep-alive."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the peer connection."""
        await self._peer.close()


class WebRtcCalls:
    """Answers browsers' offers and runs their calls (one task per call)."""

    def __init__(
        self,
        directory: Directory,
        admission: Admission,
        calls: CallStore,
        stream: StreamDeps,
        peers: PeerFactory,
        prepare: Callable[[Agent], None],
    ) -> None:
        """Answer offers with ``peers`` and run the calls on ``stream``.

        ``prepare`` synthesizes an agent's fixed phrases at the browsers' rate (background).
        """
        self.directory = directory
        self.prepare = prepare
        self.admission = admission
        self.calls = calls
        self.stream = stream
        self.peers = peers
        self._live: dict[str, tuple[Peer, asyncio.Task[None]]] = {}

    async def call(self, tenant: str, agent_id: str, offer: str, caller_ip: str) -> tuple[str, str]:
        """Place a call from the browser that sent ``offer``: its call id and the SDP answer.

        :class:`routing.errors.AgentNotFound` for an agent not of ``tenant``;
        :class:`WebRtcRefused` for an offer without audio or one that cannot be answered
        (422), or a cap reached (503).
        """
        agent = await self.directory.get_agent_by_id(agent_id, tenant)
        if "m=audio" not in offer:
            raise WebRtcRefused(422, "invalid_offer", "the offer has no audio")
        cid = uuid.uuid4().hex
        who = member(CHANNEL, cid)
        now = time.time()
        busy = await self.admission.admit(tenant, who, now)
        if busy is not None:
            log.warning("browser call refused: busy", extra={"limit": busy.limit})
            raise WebRtcRefused(503, "busy", f"no capacity for another call ({busy.limit})")
        try:
            peer = await self.peers(offer)
        except Exception as e:
            await self.admission.release(tenant, who)
            log.warning("browser offer not answered", extra={"error": type(e).__name__})
            raise WebRtcRefused(422, "invalid_offer", "the offer cannot be answered") from e
        route = Route(CHANNEL, tenant, agent, CHANNEL)
        inbound = InboundCall(CHANNEL, cid, "", caller_ip, CHANNEL, "ringing")
        routing = {"carrier": CHANNEL, "identity": CHANNEL}
        try:
            call_id, _created, _state = await self.calls.open_inbound(
                inbound, route, now, routing, None
            )
        except BaseException:
            await self.admission.release(tenant, who)
            await peer.close()
            raise
        self.prepare(agent)
        task = asyncio.create_task(self._run(call_id, cid, route, peer))
        self._live[call_id] = (peer, task)
        task.add_done_callback(lambda _t: self._live.pop(call_id, None))
        token = current_call_id.set(call_id)
        log.info("browser call answered", extra={"agent": agent.name})
        current_call_id.reset(token)
        return call_id, peer.answer

    async def _run(self, call_id: str, cid: str, route: Route, peer: Peer) -> None:
        token = current_call_id.set(call_id)
        started = time.monotonic()
        try:
            if not await peer.connected(CONNECT_TIMEOUT_S):
                log.warning("browser call never connected")
                return
            started = time.monotonic()
            stream = asyncio.create_task(
                run_stream(
                    dataclasses.replace(self.stream, transport=peer.transport),
                    PeerSocket(peer),
                    StreamStart(cid, cid, {"call_id": call_id}),
                    CHANNEL,
                    lambda _on_invalid: None,
                    rate=WEB_RATE,
                    transfers=False,
                )
            )
            await self._until_over(stream, peer)
        except Exception:
            log.exception("browser call failed")
        finally:
            await peer.close()
            await self._final(call_id, cid, route, time.monotonic() - started)
            current_call_id.reset(token)

    @staticmethod
    async def _until_over(stream: asyncio.Task[None], peer: Peer) -> None:
        """Wait for the call's stream; one whose connection went down first is given a grace.

        The transport sees the connection close only once it is built: a browser gone before
        then would leave the session running without media, so it is cancelled.
        """
        down = asyncio.create_task(peer.gone())
        try:
            await asyncio.wait({stream, down}, return_when=asyncio.FIRST_COMPLETED)
            if not stream.done():
                done, _ = await asyncio.wait({stream}, timeout=GONE_GRACE_S)
                if not done:
                    log.info("browser gone: the call's session is ended")
                    stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream
        finally:
            down.cancel()
            if not stream.done():  # this task itself was cancelled
                stream.cancel()

    async def _final(self, call_id: str, cid: str, route: Route, seconds: float) -> None:
        """The call's last state: ``completed`` once its media ran; a place never used goes back."""
        try:
            record = await self.calls.get(call_id)
            ran = record is not None and record.state is CallState.IN_PROGRESS
            if record is not None and record.state is CallState.RINGING:
                await self.admission.release(route.tenant, member(CHANNEL, cid))
            state = CallState.COMPLETED if ran else CallState.FAILED
            update = StatusUpdate(cid, state.value, duration_s=round(seconds))
            await self.calls.apply_status(CHANNEL, update, time.time())
        except Exception:
            log.exception("browser call's final state not stored")

    async def stop(self) -> None:
        """End every browser call still running here (the process stops), within 10 s."""
        running = list(self._live.values())
        await asyncio.gather(*(peer.close() for peer, _ in running), return_exceptions=True)
        tasks = {task for _, task in running}
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=10.0)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)
