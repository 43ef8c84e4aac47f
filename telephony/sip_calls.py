"""Answering a SIP INVITE: the account's agent, admission, the call record, RTP, the pipeline.

An INVITE that reached a SIP account (carriers/sip/stack.py) is answered by the account's agent:
admitted against the caps like any inbound call, recorded once (carrier ``sip``; the carrier call
id is a digest of the SIP Call-ID, which often carries an address), answered 180 then 200 with an
SDP answer (PCMU or PCMA as the caller prefers, plus telephone-event), and run through the same
stream runner as the WebSocket carriers (voice/transport.py ``run_stream``) over the call's RTP
session. Refusals are SIP answers: an INVITE not from the account's registrar 403, no account or
agent 404, a cap reached 486, an offer without G.711, with SRTP only (RTP/SAVP), or without an
IPv4 media address and a non-zero port 488, no free RTP port 503. A retransmitted INVITE gets the
call's last answer again; a CANCEL before the answer ends the call ``canceled`` and gives its
place back. The caller's BYE ends the call; the platform's hang-up sends BYE, as does a call
whose caller has sent no RTP for a minute. The call ends ``completed`` once its media ran,
``failed`` otherwise. A transfer is a REFER to the account's registrar host (RFC 3515): once the
PBX reports the new call answered, our side ends with BYE (RFC 5589).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiosipua.dialog import DialogState
from aiosipua.headers import parse_uri
from aiosipua.incoming_call import IncomingCall
from aiosipua.sdp import SdpMessage
from aiosipua.sdp_negotiate import SdpNegotiationError, negotiate_sdp

from calls.events import current_call_id
from calls.records import member
from calls.state import CallState
from calls.store import CallStore
from carriers.base import InboundCall, StatusUpdate, StreamStart
from carriers.sip.codec import G711
from carriers.sip.media import RtpSocket, SipMediaCodec
from carriers.sip.rtp import IDLE_S, Media, NoRtpPort, RtpSession
from carriers.sip.stack import ReferFailed, SipStack
from routing.directory import Agent, Directory, Route
from routing.errors import AgentNotFound
from telephony.admission import Admission
from voice.media import TransportFactory
from voice.transport import StreamDeps, run_stream

log = logging.getLogger(__name__)
CARRIER = "sip"
#: How long :meth:`SipCalls.stop` waits for the calls' handlers to finish their cleanup.
STOP_WAIT_S = 10.0
#: The tenant and agent id that answer a SIP account (``None``: no such account).
AccountLookup = Callable[[str], Awaitable[tuple[str, str] | None]]
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: The media profiles answered: plain RTP (SRTP, ``RTP/SAVP``, is not offered here).
PROFILES = frozenset({"RTP/AVP", "RTP/AVPF"})
#: How long a transfer may take, from the REFER to the PBX's final NOTIFY (ringing included).
TRANSFER_TIMEOUT_S = 60.0


def carrier_call_id(sip_call_id: str) -> str:
    """The id a SIP call is stored under: a digest of its Call-ID, never the Call-ID itself."""
    return hashlib.sha256(sip_call_id.encode()).hexdigest()[:32]


def party(uri: str, fallback: str) -> str:
    """The user part of a From/To URI when it is an E.164 number, else ``fallback``."""
    try:
        user = parse_uri(uri).user or ""
    except Exception:
        return fallback
    return user if _E164.match(user) else fallback


def media_address(
    address: tuple[str, int] | None, source: str | None = None
) -> tuple[str, int] | None:
    """The offer's RTP address when it is a unicast IPv4 literal with a usable port, else ``None``.

    Multicast, link-local and unspecified addresses are refused, and loopback unless the
    INVITE came from ``source`` on loopback itself (a PBX on this host); private ones are kept.
    """
    if address is None:
        return None
    host, port = address
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:  # a host name, an IPv6 address, garbage
        return None
    if not 0 < port < 65536 or ip.is_multicast or ip.is_link_local or ip.is_unspecified:
        return None
    if ip.is_loopback and not _loopback(source):
        return None
    return str(ip), port


def _loopback(source: str | None) -> bool:
    try:
        return source is not None and ipaddress.ip_address(source).is_loopback
    except ValueError:
        return False


def opaque(uri: str) -> str:
    """A stable stand-in for a caller that is not an E.164 number (no part of it readable)."""
    return "sip:" + hashlib.sha256(uri.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SipMediaSettings:
    """Where calls' RTP is bound (``host``, ``ports``) and the address the SDP answer gives."""

    host: str
    public_host: str
    ports: Iterable[int]
    #: No RTP from the caller for this long: the call's media is lost and the call ends.
    idle_s: float = IDLE_S


@dataclass(frozen=True)
class _Live:
    """A call whose media runs here: its SIP call, its media socket, the account it reached."""

    call: IncomingCall
    socket: RtpSocket
    account_id: str | None


class SipCalls:
    """Answers the INVITEs of SIP accounts and runs their calls (one task per call)."""

    def __init__(
        self,
        accounts: AccountLookup,
        directory: Directory,
        admission: Admission,
        calls: CallStore,
        stream: StreamDeps,
        media: SipMediaSettings,
        transport: TransportFactory,
        *,
        stack: SipStack | None = None,
        transfer_timeout_s: float = TRANSFER_TIMEOUT_S,
    ) -> None:
        """``stream``: the platform's stream dependencies; ``transport``: pipecat's over RTP.

        ``stack`` sends the REFERs of transfers (none without it).
        """
        self.accounts = accounts
        self.directory = directory
        self.admission = admission
        self.calls = calls
        self.stream = dataclasses.replace(stream, transport=transport)
        self.media = media
        self.stack = stack
        self.transfer_timeout_s = transfer_timeout_s
        self._live: dict[str, _Live] = {}  # SIP Call-ID -> the call, while its media runs
        self._by_cid: dict[str, str] = {}  # stored carrier call id -> SIP Call-ID
        self._handlers: set[asyncio.Task[Any]] = set()  # the tasks running invite()

    @staticmethod
    def _gone(call: IncomingCall) -> bool:
        """Whether the caller cancelled the INVITE (its dialog ended before our answer)."""
        return call.dialog.state == DialogState.TERMINATED

    async def invite(self, call: IncomingCall, account_id: str | None) -> None:
        """Answer ``call`` (the SIP stack's INVITE handler); returns when the call is over."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        cid = carrier_call_id(call.call_id)
        route = await self._route(account_id)
        if self._gone(call):
            log.info("SIP call cancelled during set-up")
            return
        if route is None and self.admission.draining:  # its accounts are another process's now
            log.info("SIP call refused: draining")
            call.reject(486, "Busy Here")
            return
        if route is None:
            log.warning("SIP call to an unknown account or agent")
            call.reject(404, "Not Found")
            return
        offer = call.sdp_offer
        audio = offer.audio if offer is not None else None
        if offer is None or audio is None or offer.rtp_address is None:
            log.warning("SIP call without an audio offer")
            call.reject(488, "Not Acceptable Here")
            return
        if audio.proto.upper() not in PROFILES:
            log.warning("SIP call offers no plain RTP audio (SRTP only)")
            call.reject(488, "Not Acceptable Here")
            return
        remote = media_address(offer.rtp_address, call.source_addr[0])
        if remote is None:
            log.warning("SIP call's offer has no usable IPv4 media address and port")
            call.reject(488, "Not Acceptable Here")
            return
        dtmf = next(
            (c.payload_type for c in audio.codecs if c.encoding_name.lower() == "telephone-event"),
            None,
        )
        try:
            answer, payload_type = negotiate_sdp(
                offer,
                self.media.public_host,
                0,  # the port is set once bound
                supported_codecs=list(G711),
                dtmf_payload_type=dtmf or 0,
            )
        except SdpNegotiationError:
            log.warning("SIP call offers no G.711 codec")
            call.reject(488, "Not Acceptable Here")
            return
        now = time.time()
        who = member(CARRIER, cid)
        busy = await self.admission.admit(route.tenant, who, now)
        inbound = InboundCall(
            CARRIER,
            cid,
            account_id or "",
            party(call.caller, opaque(call.caller)),
            party(call.callee, route.number),
            "ringing",
        )
        refusal = f"busy: {busy.limit}" if busy is not None else None
        routing = {"carrier": CARRIER, "identity": route.number}
        try:
            call_id, created, state = await self.calls.open_inbound(
                inbound, route, now, routing, refusal
            )
        except BaseException:
            if busy is None:
                await self.admission.release(route.tenant, who)
            raise
        token = current_call_id.set(call_id)
        try:
            if self._gone(call):
                if created and busy is None:
                    await self._cancelled(call_id, cid, route)
                return
            if busy is not None:
                log.warning("SIP call refused: busy", extra={"limit": busy.limit})
                call.reject(486, "Busy Here")
                return
            if not created or state is not CallState.RINGING:  # a retransmission: answered once
                return
            self.stream.prepare(route.agent)
            await self._answer(
                call, call_id, cid, route, account_id, remote, answer, payload_type, dtmf
            )
        finally:
            current_call_id.reset(token)

    async def _cancelled(self, call_id: str, cid: str, route: Route) -> None:
        """The caller cancelled after the call was recorded: its place back, it ends canceled."""
        log.info("SIP call cancelled during set-up")
        await self.admission.release(route.tenant, member(CARRIER, cid))
        await self._final(call_id, cid, CallState.CANCELED, 0.0)

    async def _route(self, account_id: str | None) -> Route | None:
        if account_id is None:
            return None
        found = await self.accounts(account_id)
        if found is None:
            return None
        tenant, agent_id = found
        try:
            agent: Agent = await self.directory.get_agent_by_id(agent_id, tenant)
        except AgentNotFound:
            return None
        return Route(f"sip:{account_id}", tenant, agent, CARRIER)

    async def _answer(
        self,
        call: IncomingCall,
        call_id: str,
        cid: str,
        route: Route,
        account_id: str | None,
        remote: tuple[str, int],
        answer: SdpMessage,
        payload_type: int,
        dtmf: int | None,
    ) -> None:
        socket = RtpSocket(lambda: self._bye(call))
        rtp = RtpSession(
            Media(remote, payload_type, dtmf),
            socket.audio,
            socket.key,
            on_idle=lambda: self._media_lost(socket),
            idle_s=self.media.idle_s,
        )
        try:
            port = await rtp.open(self.media.host, self.media.ports)
        except NoRtpPort:
            log.error("SIP call refused: no free RTP port")
            if not self._gone(call):
                call.reject(503, "Service Unavailable")
            await self.admission.release(route.tenant, member(CARRIER, cid))
            await self._final(call_id, cid, CallState.FAILED, 0.0)
            return
        if self._gone(call):
            await rtp.close()
            await self._cancelled(call_id, cid, route)
            return
        socket.attach(rtp)
        assert answer.audio is not None  # negotiate_sdp answers the offer's audio
        answer.audio.port = port
        started = time.monotonic()
        self._live[call.call_id] = _Live(call, socket, account_id)
        self._by_cid[cid] = call.call_id
        try:
            call.ringing()
            call.accept(answer)
            log.info("SIP call answered", extra={"agent": route.agent.name})
            start = StreamStart(cid, cid, {"call_id": call_id})
            await run_stream(
                self.stream,
                socket,
                start,
                CARRIER,
                lambda on_invalid: SipMediaCodec(socket, on_invalid),
                hang_up=lambda _cid: self._bye(call),
            )
        finally:
            self._live.pop(call.call_id, None)
            self._by_cid.pop(cid, None)
            await rtp.close()
            await self._bye(call)
            record = await self.calls.get(call_id)
            ran = record is not None and record.state is CallState.IN_PROGRESS
            if record is not None and record.state is CallState.RINGING:
                # the media never ran (refused by the stream runner): its place goes back
                await self.admission.release(route.tenant, member(CARRIER, cid))
            state = CallState.COMPLETED if ran else CallState.FAILED
            await self._final(call_id, cid, state, time.monotonic() - started)

    async def _final(self, call_id: str, cid: str, state: CallState, seconds: float) -> None:
        update = StatusUpdate(cid, state.value, duration_s=round(seconds))
        try:
            await self.calls.apply_status(CARRIER, update, time.time())
        except Exception:
            log.exception("SIP call's final state not stored", extra={"call_id": call_id})

    async def _bye(self, call: IncomingCall) -> None:
        """The platform hangs up: BYE, once, if the dialog is still up."""
        try:
            sent = call.hangup()  # None once the dialog is over (the caller's BYE came first)
        except Exception as e:
            log.warning("BYE not sent", extra={"error": type(e).__name__})
            return
        if sent is not None:
            log.info("SIP call hung up: BYE sent")

    def reinvite(self, call: IncomingCall) -> None:
        """A re-INVITE (a session refresh, hold): answered 200 with the call's SDP unchanged."""
        if call.call_id not in self._live or call.sdp_answer is None:
            call.reject(481, "Call/Transaction Does Not Exist")
            return
        call.accept(call.sdp_answer)

    @staticmethod
    def _media_lost(socket: RtpSocket) -> None:
        """No RTP from the caller for a while: the call ends (and BYE is sent)."""
        log.warning("SIP call's media lost: no RTP from the caller")
        socket.peer_gone()

    def caller_bye(self, call: IncomingCall, _request: Any = None) -> None:
        """The caller hung up (the SIP stack's BYE listener): the call's media ends."""
        live = self._live.get(call.call_id)
        if live is not None:
            log.info("SIP caller hung up")
            live.socket.peer_gone()

    async def hang_up(self, call_id: str) -> None:
        """End the call stored under carrier call id ``call_id`` (BYE), if it runs here."""
        live = self._live.get(self._by_cid.get(call_id, ""))
        if live is not None:
            await live.socket.close()

    async def transfer(
        self, call_id: str, number: str, summary_url: str | None = None, *, call_ref: str = ""
    ) -> None:
        """Hand the call (carrier call id ``call_id``) to ``number`` through the caller's PBX.

        A REFER to ``sip:number@registrar-host`` in the call's dialog; returns once the PBX
        reports the new call answered (a 2xx sipfrag): the session then ends our side and BYE
        is sent. Raises ``RuntimeError`` when the PBX refuses it, fails it or never tells.
        ``summary_url`` (warm transfers) is not offered over SIP.
        """
        live = self._live.get(self._by_cid.get(call_id, ""))
        if live is None or self.stack is None:
            raise RuntimeError("no such SIP call runs here")
        host = self._registrar_host(live)
        try:
            status = await self.stack.refer(
                live.call, f"sip:{number}@{host}", self.transfer_timeout_s
            )
        except ReferFailed as e:
            log.warning("SIP transfer failed", extra={"status": e.status})
            raise RuntimeError(f"the PBX did not take the transfer ({e.status})") from e
        except TimeoutError as e:
            log.warning("SIP transfer failed: no outcome from the PBX")
            raise RuntimeError("the PBX never reported the transfer's outcome") from e
        if not 200 <= status < 300:
            log.warning("SIP transfer failed", extra={"status": status})
            raise RuntimeError(f"the transfer's call failed at the PBX ({status})")
        log.info("SIP call transferred by the PBX")
        if live.socket.rtp is not None:
            live.socket.rtp.clear()  # nothing more of ours is played to the caller

    def _registrar_host(self, live: _Live) -> str:
        """The host of the account's registrar (its domain when set): the PBX dials there."""
        reg = self.stack.registration(live.account_id) if live.account_id and self.stack else None
        if reg is not None:
            return reg.config.domain or reg.config.registrar
        return live.call.source_addr[0]

    async def stop(self) -> None:
        """End every call still running here (the process stops): BYE to each caller.

        Then waits (``STOP_WAIT_S`` at most) for their handlers to store the calls' ends.
        """
        for live in list(self._live.values()):
            await live.socket.close()
        running = [t for t in self._handlers if t is not asyncio.current_task()]
        if running:
            await asyncio.wait(running, timeout=STOP_WAIT_S)
