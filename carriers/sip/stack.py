"""The process-wide SIP stack: aiosipua transports and UAS, and one registration per SIP account.

Signalling is aiosipua's (parsing, transactions, digest answers, refresh at 90 % of the granted
Expires); on top of it each :class:`AccountRegistration` retransmits its REGISTER over UDP
(T1 doubling up to T2, given up after 64 x T1), reads ICMP errors for its registrar, and backs
off exponentially with jitter after a timeout, a 5xx or an ICMP error. Wrong credentials (a
challenge answered and refused) are not retried until a long backoff or a change of the account.
Calls: a CANCEL before our answer gets 200 and the INVITE 487 (after it, only 200); a call
that is over (refused ones too) leaves aiosipua's tables and ours 64 x T1 after its end; over
TCP what we send says so in its Via and Contact, and answers go back on the request's
connection. A REFER (transfer, RFC 3515) is sent in a call's dialog and its outcome read from
the NOTIFYs' sipfrag (failed at once when the call ends). A refreshed registration's expiry is
the one the registrar gave our own Contact. Nothing here logs a message's text, a Call-ID or
an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import functools
import inspect
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from aiosipua.auth import SipDigestAuth
from aiosipua.dialog import DialogState
from aiosipua.headers import (
    CSeq,
    SipUri,
    Via,
    parse_uri,
    parse_via,
    stringify_cseq,
    stringify_via,
)
from aiosipua.incoming_call import IncomingCall
from aiosipua.message import SipMessage, SipRequest, SipResponse
from aiosipua.registration import Registration
from aiosipua.transport import SipTransport, TcpSipTransport, UdpSipTransport
from aiosipua.uac import SipUAC
from aiosipua.uas import SipUAS
from aiosipua.utils import format_addr, generate_branch

log = logging.getLogger(__name__)

#: ``IP_RECVERR`` (Linux): ICMP errors of an unconnected UDP socket reach its error queue.
_IP_RECVERR = 11
#: An INVITE handler: the call, and the id of the account it reached (``None`` if unknown).
InviteHandler = Callable[[IncomingCall, "str | None"], "Awaitable[None] | None"]
#: Told each change of an account's registration.
StateListener = Callable[[str, "RegStatus"], None]


class RegState(enum.StrEnum):
    """Where an account's registration stands."""

    REGISTERING = "registering"
    REGISTERED = "registered"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RegStatus:
    """An account's registration: its state, until when it holds, when it is tried next."""

    state: RegState
    expires_at: float | None = None
    next_attempt_at: float | None = None
    last_status: int | None = None


@dataclass(frozen=True)
class SipTimers:
    """REGISTER retransmission (RFC 3261 17.1.2) and the backoff between attempts."""

    t1: float = 0.5
    t2: float = 4.0
    #: An unanswered REGISTER is given up after this long (64 x T1).
    timeout: float = 32.0
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    #: After wrong credentials, the next try (unless the account changes first).
    rejected_retry: float = 3600.0

    def backoff(self, failures: int) -> float:
        """The wait before attempt ``failures + 1``: doubling up to the cap, half of it jitter."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(0, failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrets


@dataclass(frozen=True)
class AccountConfig:
    """What registering one SIP account needs (the password in clear, never logged)."""

    account_id: str
    registrar: str
    port: int
    transport: str
    username: str
    password: str = field(repr=False)
    domain: str | None = None
    expires_s: int = 300

    @property
    def aor(self) -> str:
        """The address-of-record: ``sip:username@domain`` (the registrar's host by default)."""
        return f"sip:{self.username}@{self.domain or self.registrar}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: _UdpTransport) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector's datagram transport is not a DatagramTransport subclass in 3.11.
        self.owner._udp_transport = cast(asyncio.DatagramTransport, transport)  # noqa: SLF001

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._dispatch(data, (str(addr[0]), int(addr[1])))  # noqa: SLF001

    def error_received(self, exc: Exception) -> None:
        self.owner.drain_errors()


@dataclass
class _UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, counting unparsable datagrams and reporting ICMP errors."""

    on_unreachable: Callable[[tuple[str, int]], None] | None = None
    dropped: int = 0

    _sock: socket.socket | None = None

    async def start(self) -> None:
        # A socket of our own: its ICMP error queue is read through it (uvloop's transport
        # socket offers no recvmsg).
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # not Linux: timeouts alone find dead registrars
                sock.setsockopt(socket.SOL_IP, _IP_RECVERR, 1)
            sock.bind(self.local_addr)
            loop = asyncio.get_running_loop()
            await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = SipMessage.parse(data)
        except Exception:  # anything unparsable is dropped, never logged
            self.dropped += 1
            return
        if isinstance(msg, SipRequest) and not msg.headers.get("via"):
            self.dropped += 1
            return
        super()._dispatch(data, addr)

    def drain_errors(self) -> None:
        """Read the socket's ICMP error queue: each error names the address it came for."""
        if self._sock is None or self._udp_transport is None:
            return
        for _ in range(64):
            try:
                _, _, _, dest = self._sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
            except OSError:  # the queue is empty
                return
            if self.on_unreachable is not None and dest:
                self.on_unreachable((str(dest[0]), int(dest[1])))


class _TcpTransport(TcpSipTransport):
    """aiosipua's TCP transport; what it sends says TCP in its top Via and its Contact."""

    def send(self, message: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        """Send ``message`` on the connection to ``addr``, marked as sent over TCP."""
        mark_tcp(message)
        super().send(message, addr)

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        """Hand on a message; a request's answers go back on the connection it came in on."""
        try:
            msg = SipMessage.parse(data)
            if isinstance(msg, SipRequest):
                stamp_connection(msg, addr)
        except Exception:
            return
        if self.on_message is not None:
            try:
                self.on_message(msg, addr)
            except Exception as e:
                log.warning("SIP message not handled", extra={"error": type(e).__name__})


def stamp_connection(request: SipRequest, addr: tuple[str, int]) -> None:
    """Set the top Via's ``received`` and ``rport`` to ``addr``, the connection's far end.

    Responses are routed by them, so over TCP they go back on that connection (RFC 3261 18.2.2).
    """
    raw = request.headers.get("via")
    if not raw:
        return
    via = parse_via(raw[0])
    via.params["received"] = addr[0]
    via.params["rport"] = str(addr[1])
    request.headers.remove("Via")
    for v in [stringify_via(via), *raw[1:]]:
        request.headers.append("Via", v)


def mark_tcp(message: SipRequest | SipResponse) -> None:
    """Give ``message``'s Contact ``;transport=tcp`` and a request's top Via ``TCP``."""
    contact = message.get_header("contact")
    if contact and "transport=" not in contact.lower():
        if ">" in contact:
            head, _, tail = contact.partition(">")
            message.set_header("Contact", f"{head};transport=tcp>{tail}")
        else:
            message.set_header("Contact", f"{contact};transport=tcp")
    if isinstance(message, SipRequest):
        vias = message.via
        if vias and vias[0].transport.upper() == "UDP":
            vias[0] = replace(vias[0], transport="TCP")
            message.via = vias


def _same_user(x: SipUri, ours: str) -> bool:
    """Whether a Contact URI of a REGISTER answer has our Contact's user part (the account id)."""
    try:
        y = parse_uri(ours)
    except Exception:
        return False
    return bool(y.user) and x.user == y.user


def _same_binding(x: SipUri, ours: str) -> bool:
    """Whether a Contact URI of a REGISTER answer names our binding (user, host and port)."""
    try:
        y = parse_uri(ours)
    except Exception:
        return False
    return (x.user, x.host.lower(), x.port or 5060) == (y.user, y.host.lower(), y.port or 5060)


class _Register(Registration):
    """aiosipua's registration, with the Via transport of the account and hooks for ours."""

    def __init__(
        self,
        uac: SipUAC,
        config: AccountConfig,
        registrar: tuple[str, int],
        contact: str,
        sent: Callable[[SipRequest], None],
        answered: Callable[[SipResponse], None],
    ) -> None:
        super().__init__(
            uac,
            config.aor,
            registrar,
            expires=config.expires_s,
            auth=SipDigestAuth(config.username, config.password),
            contact_uri=contact,
            registrar_uri=f"sip:{config.domain or config.registrar}",
            user_agent="Bonmoniq",
        )
        self.via_transport = config.transport.upper()
        self._sent = sent
        self._answered = answered

    def _send_register(
        self, expires: int, *, auth_header: tuple[str, str] | None = None
    ) -> SipRequest:
        self._cseq += 1
        addr = self.uac._local_addr()  # noqa: SLF001
        request = SipRequest(method="REGISTER", uri=self.registrar_uri)
        via = Via(
            transport=self.via_transport,
            host=addr[0],
            port=addr[1],
            params={"branch": generate_branch(), "rport": None},
        )
        request.headers.append("Via", stringify_via(via))
        request.headers.set_single("From", f"<{self.aor}>;tag={self._from_tag}")
        request.headers.set_single("To", f"<{self.aor}>")
        request.headers.set_single("Call-ID", self.call_id)
        request.headers.set_single("CSeq", stringify_cseq(CSeq(seq=self._cseq, method="REGISTER")))
        request.headers.set_single("Max-Forwards", "70")
        request.headers.set_single("Contact", f"<{self.contact_uri}>")
        request.headers.set_single("Expires", str(expires))
        if self.user_agent:
            request.headers.set_single("User-Agent", self.user_agent)
        if auth_header is not None:
            request.headers.set_single(auth_header[0], auth_header[1])
        self.uac.transactions.create_client(request)
        self._sent(request)
        return request

    def _handle_response(self, response: SipResponse) -> None:
        self._answered(response)
        super()._handle_response(response)

    def _granted_expires(self, response: SipResponse) -> int:
        """The interval granted to our binding: its own Contact's ``expires`` in the 200.

        Our binding is the Contact equal to ours, else (a registrar that rewrote it behind NAT)
        the one with our user part, else the only Contact listed; with none of those, the
        smallest ``expires`` listed, else the Expires header, else what we asked.
        """
        listed: list[tuple[SipUri, int]] = []
        for contact in response.contact:
            with contextlib.suppress(ValueError, TypeError):
                listed.append((contact.uri, max(0, int(contact.params.get("expires") or ""))))
        for match in (
            lambda uri: _same_binding(uri, self.contact_uri),
            lambda uri: _same_user(uri, self.contact_uri),
        ):
            for uri, value in listed:
                if match(uri):
                    return value
        if len(response.contact) == 1 and listed:
            return listed[0][1]
        if listed:
            return min(value for _, value in listed)
        header = response.get_header("expires")
        if header:
            with contextlib.suppress(ValueError):
                return max(0, int(header))
        return self.expires


class AccountRegistration:
    """One account's registration: attempts, retransmission, backoff, its :class:`RegStatus`."""

    def __init__(
        self,
        stack: SipStack,
        config: AccountConfig,
        timers: SipTimers,
        changed: Callable[[AccountRegistration], None],
    ) -> None:
        """Register ``config`` through ``stack``; ``changed`` is told each new status."""
        self.stack = stack
        self.config = config
        self.timers = timers
        self.changed = changed
        self.status = RegStatus(RegState.REGISTERING)
        self.registrar: tuple[str, int] | None = None
        self.failures = 0
        self._reg: _Register | None = None
        self._pending_cseq = 0
        self._retransmit: asyncio.Task[None] | None = None
        self._retry: asyncio.Task[None] | None = None
        self._attempt: asyncio.Task[None] | None = None
        self.register_count = 0
        self._stopping = False

    @property
    def account_id(self) -> str:
        """The account's id."""
        return self.config.account_id

    def _set(self, status: RegStatus) -> None:
        if status != self.status:
            self.status = status
            self.changed(self)

    def start(self) -> None:
        """Begin the first attempt now."""
        self._attempt = asyncio.get_running_loop().create_task(self._begin())

    async def _begin(self) -> None:
        self._set(replace(self.status, state=RegState.REGISTERING, next_attempt_at=None))
        try:
            self.registrar = await self.stack.resolve(self.config)
        except OSError:  # no such host (yet)
            self._unreachable(None)
            return
        permit = self.stack.permit
        if permit is not None and not permit(self.config.registrar, self.registrar[0]):
            self._refused(None)
            return
        try:
            uac = await self.stack.uac_for(self.config, self.registrar)
        except OSError:  # a TCP registrar refusing the connection
            self._unreachable(None)
            return
        if self._reg is None or self._reg.uac is not uac:
            self._forget_reg()
            self._reg = _Register(
                uac,
                self.config,
                self.registrar,
                self.stack.contact_for(self.config),
                self._on_sent,
                self._on_answered,
            )
            self._reg.on_registered = self._on_registered
            self._reg.on_failed = self._on_failed
            self._reg.on_expired = self._on_expired
        self._reg.register()

    def _on_sent(self, request: SipRequest) -> None:
        assert self._reg is not None and self.registrar is not None
        self.register_count += 1
        if self._stopping:  # the unREGISTER: sent once, its answer not awaited
            with contextlib.suppress(OSError, RuntimeError):
                self._reg.uac.transport.send(request, self.registrar)
            return
        self._pending_cseq = self._reg._cseq  # noqa: SLF001
        self._cancel(self._retransmit)
        self._retransmit = asyncio.get_running_loop().create_task(
            self._retransmit_until_answered(request, self._reg.uac.transport, self.registrar)
        )

    async def _retransmit_until_answered(
        self, request: SipRequest, transport: SipTransport, dest: tuple[str, int]
    ) -> None:
        started = time.monotonic()
        interval = self.timers.t1
        try:
            transport.send(request, dest)
        except (OSError, RuntimeError):
            self._unreachable(None)
            return
        while True:
            wait = min(interval, self.timers.timeout - (time.monotonic() - started))
            if wait <= 0:
                break
            await asyncio.sleep(wait)
            if time.monotonic() - started >= self.timers.timeout:
                break
            if not transport.reliable:
                with contextlib.suppress(OSError, RuntimeError):
                    transport.send(request, dest)
            interval = min(interval * 2, self.timers.t2)
        self._retransmit = None
        self._unreachable(None)  # Timer F: no final answer

    def _on_answered(self, response: SipResponse) -> None:
        cseq = response.cseq
        if cseq is not None and cseq.seq == self._pending_cseq and response.status_code >= 200:
            self._cancel(self._retransmit)
            self._retransmit = None

    def _on_registered(self, reg: Registration) -> None:
        self.failures = 0
        self._set(
            RegStatus(
                RegState.REGISTERED,
                expires_at=time.time() + reg.granted_expires,
                last_status=200,
            )
        )

    def _on_failed(self, reg: Registration, status: int, reason: str) -> None:
        if status >= 500 or status == 408:
            self._unreachable(status)
            return
        self._refused(status)  # after the challenge (401/403/407), or another final refusal

    def _refused(self, status: int | None) -> None:
        self._cancel(self._retry)
        delay = self.timers.rejected_retry
        self._set(RegStatus(RegState.REJECTED, next_attempt_at=time.time() + delay,
                            last_status=status))  # fmt: skip
        self._retry = asyncio.get_running_loop().create_task(self._again(delay))

    def _on_expired(self, reg: Registration) -> None:
        if self.status.state == RegState.REGISTERED:
            self._unreachable(self.status.last_status)

    def unreachable(self) -> None:
        """An ICMP error came back from the registrar."""
        if self._retransmit is not None:
            self._cancel(self._retransmit)
            self._retransmit = None
            self._unreachable(None)

    def _unreachable(self, status: int | None) -> None:
        self._cancel(self._retransmit)
        self._retransmit = None
        if self._reg is not None:
            self._reg._cancel_timers()  # noqa: SLF001
        self.failures += 1
        delay = self.timers.backoff(self.failures)
        self._cancel(self._retry)
        self._set(RegStatus(RegState.UNREACHABLE, next_attempt_at=time.time() + delay,
                            last_status=status))  # fmt: skip
        self._retry = asyncio.get_running_loop().create_task(self._again(delay))

    async def _again(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retry = None
        await self._begin()

    @staticmethod
    def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _forget_reg(self) -> None:
        if self._reg is not None:
            self._reg._cancel_timers()  # noqa: SLF001
            self._reg.uac._registrations.pop(self._reg.call_id, None)  # noqa: SLF001
            self._reg = None

    async def stop(self) -> None:
        """Stop retrying; remove the binding (best effort, unanswered) when it was registered."""
        self._stopping = True
        for task in (self._attempt, self._retransmit, self._retry):
            self._cancel(task)
        self._retransmit = self._retry = None
        if self._reg is not None and self.status.state == RegState.REGISTERED:
            with contextlib.suppress(Exception):
                self._reg.unregister()
        self._forget_reg()
        self._set(RegStatus(RegState.STOPPED))


#: How many free UDP ports are tried for a stack on port 0 (TCP must get the same number).
_BIND_ATTEMPTS = 20
#: Last INVITE responses kept before those of calls no longer known are dropped.
_MAX_REPLIES = 256


class ReferFailed(RuntimeError):
    """A REFER was refused or went unanswered (its ``status``: 0 when nothing came)."""

    def __init__(self, status: int, what: str) -> None:
        super().__init__(what)
        self.status = status


#: Put in a REFER's progress when its call ends.
_CALL_ENDED = -1


@dataclass
class _Refer:
    """A REFER in flight: its CSeq, its final answer, the sipfrag statuses of its NOTIFYs."""

    cseq: int
    answered: asyncio.Future[int]
    progress: asyncio.Queue[int] = field(default_factory=asyncio.Queue)


class SipStack:
    """One SIP endpoint for the process: UDP (and TCP) on one port, INVITEs and registrations."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        public_host: str | None = None,
        tcp: bool = True,
        timers: SipTimers | None = None,
        permit: Callable[[str, str], bool] | None = None,
        trusted: Iterable[str] = (),
    ) -> None:
        """Listen on ``host:port`` (0: any free port); Contact carries ``public_host``.

        ``permit(host, ip)`` says whether a registrar's address may be reached (default: any).
        ``trusted``: addresses or networks (trunk peers) whose INVITEs any account accepts, besides
        the account's own registrar.
        """
        self.permit = permit
        self.trusted = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self.host = host
        self.port = port
        self.public_host = public_host
        self.tcp = tcp
        self.timers = timers or SipTimers()
        self.udp: _UdpTransport | None = None
        self.tcp_transport: TcpSipTransport | None = None
        self._uacs: dict[str, SipUAC] = {}
        self._uas: list[SipUAS] = []
        self._reinvite_handler: Callable[[IncomingCall], None] | None = None
        self._handler: InviteHandler | None = None
        self._listeners: list[StateListener] = []
        self._regs: dict[str, AccountRegistration] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bye_listeners: list[Callable[[IncomingCall, SipRequest], None]] = []
        self._replies: dict[str, SipResponse] = {}  # Call-ID -> last response to its INVITE
        self._refers: dict[str, _Refer] = {}  # Call-ID -> its REFER in flight

    # --- lifecycle ---

    async def start(self) -> None:
        """Bind the transports and start answering requests.

        Port 0: a free UDP port, whose number TCP must get too; when TCP has it taken already,
        another is tried.
        """
        logging.getLogger("aiosipua").setLevel(logging.CRITICAL)  # it logs addresses and URIs
        wanted = self.port
        for attempt in range(_BIND_ATTEMPTS):
            try:
                await self._bind()
                break
            except OSError as e:
                await self.stop()
                self.port = wanted
                if wanted != 0 or e.errno != errno.EADDRINUSE or attempt == _BIND_ATTEMPTS - 1:
                    raise
        log.info("SIP stack listening", extra={"port": self.port, "tcp": self.tcp})

    async def _bind(self) -> None:
        self.udp = _UdpTransport(local_addr=(self.host, self.port))
        self.udp.on_unreachable = self._icmp
        await self._serve(self.udp, "udp")
        assert self.udp._udp_transport is not None  # noqa: SLF001
        bound = self.udp._udp_transport.get_extra_info("sockname")  # noqa: SLF001
        self.port = int(bound[1])
        self.udp.local_addr = (self.advertised_host, self.port)
        if self.tcp:
            self.tcp_transport = _TcpTransport(local_addr=(self.host, self.port))
            await self._serve(self.tcp_transport, "tcp")
            self.tcp_transport.local_addr = (self.advertised_host, self.port)

    async def _serve(self, transport: SipTransport, name: str) -> None:
        uac = SipUAC(transport)
        uas = SipUAS(transport, uac=uac, user_agent="Bonmoniq")
        uas.on_invite = self._invite
        uas.on_bye = self._bye
        uas.on_reinvite = self._reinvite
        uas.on_transfer_progress = self._transfer_progress
        uas.on_ack_timeout = self._ack_timeout
        uas._handlers["CANCEL"] = functools.partial(self._cancel, uas)  # noqa: SLF001
        await uas.start()
        transport.on_message = self._guarded(uas)
        transport.send_reply = self._recording(transport.send_reply)  # type: ignore[method-assign,assignment]
        self._uacs[name] = uac
        self._uas.append(uas)

    def _guarded(self, uas: SipUAS) -> Callable[[SipRequest | SipResponse, tuple[str, int]], None]:
        def on_message(msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
            try:
                if isinstance(msg, SipRequest) and self._retransmitted(uas, msg):
                    return
                if isinstance(msg, SipResponse) and self._refer_answered(msg):
                    return
                uas._on_message(msg, addr)  # noqa: SLF001
            except Exception as e:  # a bad request must not reach the transport's logger
                log.warning("SIP message not handled", extra={"error": type(e).__name__})

        return on_message

    def _recording(
        self, send_reply: Callable[[SipResponse], None]
    ) -> Callable[[SipResponse], None]:
        """``send_reply`` that also keeps the last response to each INVITE (for retransmissions)."""

        def send(response: SipResponse) -> None:
            send_reply(response)
            cseq = response.cseq
            if cseq is not None and cseq.method == "INVITE" and response.call_id:
                self._replies[response.call_id] = response
                if len(self._replies) > _MAX_REPLIES:
                    live = {c for uas in self._uas for c in uas._calls}  # noqa: SLF001
                    self._replies = {k: v for k, v in self._replies.items() if k in live}

        return send

    def _retransmitted(self, uas: SipUAS, request: SipRequest) -> bool:
        """Whether ``request`` repeats the INVITE of a call being set up; if so, answer it again.

        A repeat (no To-tag; same Call-ID, From-tag and top Via branch as the call's INVITE) gets
        the last response sent to that INVITE, and must not start a second dialog.
        """
        if request.method != "INVITE" or request.to_addr is None or request.to_addr.tag:
            return False
        existing = uas._calls.get(request.call_id or "")  # noqa: SLF001
        if existing is None:
            return False
        first = existing.invite
        if first.from_addr is None or request.from_addr is None:
            return False
        if first.from_addr.tag != request.from_addr.tag or not first.via or not request.via:
            return False
        if first.via[0].branch != request.via[0].branch:
            return False
        last = self._replies.get(request.call_id or "")
        if last is not None:
            with contextlib.suppress(Exception):
                uas.transport.send_reply(last)
        return True

    async def stop(self) -> None:
        """Stop every registration (unregistering), then the transports."""
        for reg in list(self._regs.values()):
            await reg.stop()
        self._regs.clear()
        for task in list(self._tasks):
            task.cancel()
        for uas in self._uas:
            with contextlib.suppress(Exception):
                await uas.stop()
        self._uas.clear()

    @property
    def advertised_host(self) -> str:
        """The host put in Via and Contact."""
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def dropped(self) -> int:
        """How many datagrams were dropped as not SIP."""
        return self.udp.dropped if self.udp is not None else 0

    # --- incoming calls ---

    def on_invite(self, handler: InviteHandler | None) -> None:
        """Call ``handler(call, account_id)`` for each new INVITE (``None``: answer 480)."""
        self._handler = handler

    def _invite(self, call: IncomingCall) -> None:
        handler = self._handler
        if handler is None:
            with contextlib.suppress(Exception):
                call.reject(480, "Temporarily Unavailable")
            self._ended(call)
            return
        account_id = self.account_of(call.invite)
        if account_id is not None and not self.trusts(account_id, call.source_addr[0]):
            log.warning("INVITE refused: not from the account's registrar")
            with contextlib.suppress(Exception):
                call.reject(403, "Forbidden")
            self._ended(call)
            return
        try:
            result = handler(call, account_id)
        except Exception as e:
            log.exception("INVITE handler failed", extra={"error": type(e).__name__})
            self._reject_unanswered(call)
            self._ended(call)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._awaited(call, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._ended(call)

    async def _awaited(self, call: IncomingCall, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception as e:
            log.exception("INVITE handler failed", extra={"error": type(e).__name__})
            self._reject_unanswered(call)
        finally:
            self._ended(call)

    def _ended(self, call: IncomingCall) -> None:
        """The handler is done with ``call``: once it is no longer up, forget it after a while.

        The INVITE's answer is kept for retransmissions and its ACK for 64 x T1, then the call,
        its INVITE transaction and its last answer leave the tables (a call still up leaves
        them at its BYE).
        """
        if call.dialog.state == DialogState.CONFIRMED:
            return
        task = asyncio.get_running_loop().create_task(self._forget_later(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forget_later(self, call: IncomingCall) -> None:
        await asyncio.sleep(self.timers.timeout)
        self.forget(call)

    def forget(self, call: IncomingCall) -> None:
        """Drop a call that is over from aiosipua's tables and ours (idempotent)."""
        if call.dialog.state == DialogState.CONFIRMED:
            return
        call._stop_retransmissions()  # noqa: SLF001
        for uas in self._uas:
            if uas._calls.get(call.call_id) is call:  # noqa: SLF001
                del uas._calls[call.call_id]  # noqa: SLF001
            if uas.transport is call.transport:
                uas._remove_invite_transaction(call.invite)  # noqa: SLF001
        if self._replies.get(call.call_id, None) is not None and not any(
            call.call_id in uas._calls
            for uas in self._uas  # noqa: SLF001
        ):
            del self._replies[call.call_id]

    def table_sizes(self) -> dict[str, int]:
        """How many calls, INVITE server transactions, kept answers and REFERs are tracked."""
        calls = sum(len(uas._calls) for uas in self._uas)  # noqa: SLF001
        invites = sum(
            1
            for uas in self._uas
            for key in uas.transactions.server_transactions
            if key[1] == "INVITE"
        )
        return {"calls": calls, "invites": invites, "replies": len(self._replies),
                "refers": len(self._refers)}  # fmt: skip

    def _cancel(self, uas: SipUAS, request: SipRequest, addr: tuple[str, int]) -> None:
        """A CANCEL (RFC 3261 9.2): 200 to it; an INVITE not answered yet gets 487 and ends.

        A CANCEL that crosses our 200 has no effect: the call goes on (its caller sends BYE).
        """
        vias = request.via
        branch = vias[0].branch if vias else None
        txn = uas.transactions.get_server(branch, "INVITE") if branch else None
        call = None
        if txn is not None and txn.request is not None:
            call = uas._calls.get(txn.request.call_id or "")  # noqa: SLF001
        if call is None:
            uas._send_error(request, 481, "Call/Transaction Does Not Exist")  # noqa: SLF001
            return
        response = call.dialog.create_response(request, 200, "OK")
        if uas.user_agent:
            response.headers.set_single("User-Agent", uas.user_agent)
        uas.transport.send_reply(response)
        if call._answered or call.dialog.state == DialogState.TERMINATED:  # noqa: SLF001
            return
        log.info("SIP call cancelled by the caller before it was answered")
        call.reject(487, "Request Terminated")  # the dialog ends; the ACK closes the INVITE

    @staticmethod
    def _reject_unanswered(call: IncomingCall) -> None:
        if not call._answered:  # noqa: SLF001
            with contextlib.suppress(Exception):
                call.reject(500, "Server Internal Error")

    def _bye(self, call: IncomingCall, request: SipRequest) -> None:
        self._ended(call)
        pending = self._refers.get(call.call_id)
        if pending is not None:  # the call is over: its REFER fails now
            if not pending.answered.done():
                pending.answered.set_exception(ReferFailed(0, "the call ended"))
            pending.progress.put_nowait(_CALL_ENDED)
        for listener in list(self._bye_listeners):
            try:
                listener(call, request)
            except Exception as e:
                log.warning("BYE listener failed", extra={"error": type(e).__name__})

    def _ack_timeout(self, call: IncomingCall) -> None:
        """Our 200 was never acknowledged: the caller is gone, as if it had sent BYE."""
        log.warning("SIP call's answer never acknowledged: the caller is gone")
        self._bye(call, call.invite)

    def on_bye(self, listener: Callable[[IncomingCall, SipRequest], None]) -> None:
        """Tell ``listener(call, bye)`` of each BYE the far end sends on an incoming call.

        A call whose 200 is never ACKed (64 x T1) is told too, with its INVITE.
        """
        self._bye_listeners.append(listener)

    async def refer(self, call: IncomingCall, refer_to: str, notify_timeout: float) -> int:
        """Ask the far end of ``call`` to call ``refer_to`` (REFER, RFC 3515); its outcome.

        The REFER is retransmitted over UDP until answered (64 x T1 at most); once it is
        accepted, the NOTIFYs' sipfrag statuses are read until a final one, which is returned
        (``notify_timeout`` at most). Raises :class:`ReferFailed` when the REFER is refused or
        unanswered or the call ends (BYE, unacknowledged answer), :class:`TimeoutError` when no
        final NOTIFY comes.
        """
        if call.dialog.state != DialogState.CONFIRMED or call.transport is None:
            raise ReferFailed(0, "the call is not up")
        transport = call.transport
        addr = call._signaling_addr()  # noqa: SLF001
        request = call.dialog.create_request(
            "REFER", via_host=addr[0], via_port=addr[1],
            via_transport="TCP" if transport.reliable else "UDP",
        )  # fmt: skip
        request.headers.set_single("Refer-To", f"<{refer_to}>")
        request.headers.set_single("Referred-By", f"<{call.dialog.local_uri}>")
        request.headers.set_single("Contact", f"<sip:{format_addr(*addr)}>")
        request.headers.set_single("Content-Length", "0")
        if call.user_agent:
            request.headers.set_single("User-Agent", call.user_agent)
        pending = _Refer(call.dialog.local_cseq, asyncio.get_running_loop().create_future())
        self._refers[call.call_id] = pending
        try:
            status = await self._send_until_answered(request, call, pending.answered)
            if status >= 300:
                raise ReferFailed(status, "the REFER was refused")
            async with asyncio.timeout(notify_timeout):
                while True:
                    final = await pending.progress.get()
                    if final == _CALL_ENDED:
                        raise ReferFailed(0, "the call ended")
                    if final >= 200:
                        return final
        finally:
            if self._refers.get(call.call_id) is pending:
                del self._refers[call.call_id]

    async def _send_until_answered(
        self, request: SipRequest, call: IncomingCall, answered: asyncio.Future[int]
    ) -> int:
        """Send ``request`` to the call's peer (again over UDP, T1 doubling); its final status."""
        transport = call.transport
        assert transport is not None
        interval, waited = self.timers.t1, 0.0
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                transport.send(request, call.source_addr)
            wait = self.timers.timeout - waited if transport.reliable else interval
            if wait <= 0:
                raise ReferFailed(0, "the REFER went unanswered")
            try:
                return await asyncio.wait_for(asyncio.shield(answered), wait)
            except TimeoutError:
                waited += wait
                if waited >= self.timers.timeout:
                    raise ReferFailed(0, "the REFER went unanswered") from None
                interval = min(interval * 2, self.timers.t2)

    def _refer_answered(self, response: SipResponse) -> bool:
        """Whether ``response`` answers a REFER of ours (then taken here, not by aiosipua)."""
        cseq = response.cseq
        if cseq is None or cseq.method.upper() != "REFER":
            return False
        pending = self._refers.get(response.call_id or "")
        if pending is not None and cseq.seq == pending.cseq and response.status_code >= 200:
            if not pending.answered.done():
                pending.answered.set_result(response.status_code)
        return True

    def _transfer_progress(self, call_id: str, status: int, _reason: str) -> None:
        pending = self._refers.get(call_id)
        if pending is not None:
            pending.progress.put_nowait(status)

    def on_reinvite(self, handler: Callable[[IncomingCall], None] | None) -> None:
        """Answer each re-INVITE (a session refresh, hold) of a call with ``handler(call)``.

        Without a handler a re-INVITE is answered 488 Not Acceptable Here (the call goes on).
        """
        self._reinvite_handler = handler

    def _reinvite(self, call: IncomingCall) -> None:
        handler = self._reinvite_handler
        try:
            if handler is None:
                call.reject(488, "Not Acceptable Here")
            else:
                handler(call)
        except Exception as e:
            log.warning("re-INVITE handler failed", extra={"error": type(e).__name__})
            with contextlib.suppress(Exception):
                call.reject(500, "Server Internal Error")

    def account_of(self, invite: SipRequest) -> str | None:
        """The account an INVITE reached: the user of its Request-URI, our Contact's account id."""
        try:
            user = parse_uri(invite.uri).user
        except Exception:
            return None
        return user if user and user in self._regs else None

    def trusts(self, account_id: str, source_ip: str) -> bool:
        """Whether an INVITE for ``account_id`` from ``source_ip`` may be answered.

        Only the account's registrar (its address as resolved when registering) and the
        ``trusted`` peers given to the stack send calls; anyone else could point RTP anywhere.
        """
        try:
            ip = ipaddress.ip_address(source_ip)
        except ValueError:
            return False
        if any(ip in net for net in self.trusted):
            return True
        reg = self._regs.get(account_id)
        return reg is not None and reg.registrar is not None and reg.registrar[0] == str(ip)

    # --- registrations ---

    def contact_for(self, config: AccountConfig) -> str:
        """The Contact an account registers: its id as the user, this stack as the host."""
        suffix = ";transport=tcp" if config.transport == "tcp" else ""
        return f"sip:{config.account_id}@{format_addr(self.advertised_host, self.port)}{suffix}"

    async def resolve(self, config: AccountConfig) -> tuple[str, int]:
        """The registrar's IPv4 address and port."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            config.registrar, config.port, family=socket.AF_INET, type=socket.SOCK_DGRAM
        )
        return str(infos[0][4][0]), int(infos[0][4][1])

    async def uac_for(self, config: AccountConfig, registrar: tuple[str, int]) -> SipUAC:
        """The UAC of the account's transport (over TCP: connected to the registrar first)."""
        if config.transport == "tcp":
            if self.tcp_transport is None:
                raise OSError("TCP is off")
            if registrar not in self.tcp_transport._connections:  # noqa: SLF001
                await self.tcp_transport.connect(registrar)
            return self._uacs["tcp"]
        return self._uacs["udp"]

    def register(self, config: AccountConfig) -> None:
        """Run ``config``'s registration, replacing the account's running one if any."""
        old = self._regs.pop(config.account_id, None)
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.stop())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        reg = AccountRegistration(self, config, self.timers, self._changed)
        self._regs[config.account_id] = reg
        self._changed(reg)
        reg.start()

    async def unregister(self, account_id: str) -> None:
        """Stop the account's registration (its binding removed when it held one)."""
        reg = self._regs.pop(account_id, None)
        if reg is not None:
            await reg.stop()

    def registration(self, account_id: str) -> AccountRegistration | None:
        """The account's running registration."""
        return self._regs.get(account_id)

    def states(self) -> dict[str, RegStatus]:
        """Each running registration's status, by account id."""
        return {a: r.status for a, r in self._regs.items()}

    def on_state(self, listener: StateListener) -> None:
        """Tell ``listener(account_id, status)`` of each change of a registration."""
        self._listeners.append(listener)

    def _changed(self, reg: AccountRegistration) -> None:
        for listener in self._listeners:
            try:
                listener(reg.account_id, reg.status)
            except Exception as e:
                log.warning("registration listener failed", extra={"error": type(e).__name__})

    def _icmp(self, dest: tuple[str, int]) -> None:
        for reg in list(self._regs.values()):
            if reg.registrar == dest and reg.config.transport == "udp":
                reg.unreachable()
