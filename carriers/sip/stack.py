"""The process-wide SIP stack: aiosipua transports and UAS, and one registration per SIP account.

Signalling is aiosipua's (parsing, transactions, digest answers, refresh at 90 % of the granted
Expires); on top of it each :class:`AccountRegistration` retransmits its REGISTER over UDP
(T1 doubling up to T2, given up after 64 x T1), reads ICMP errors for its registrar, and backs
off exponentially with jitter after a timeout, a 5xx or an ICMP error. Wrong credentials (a
challenge answered and refused) are not retried until a long backoff or a change of the account.
Nothing here logs a message's text, a Call-ID or an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
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
from aiosipua.headers import CSeq, Via, parse_uri, stringify_cseq, stringify_via
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


#: Last INVITE responses kept before those of calls no longer known are dropped.
_MAX_REPLIES = 256


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

    # --- lifecycle ---

    async def start(self) -> None:
        """Bind the transports and start answering requests."""
        logging.getLogger("aiosipua").setLevel(logging.CRITICAL)  # it logs addresses and URIs
        self.udp = _UdpTransport(local_addr=(self.host, self.port))
        self.udp.on_unreachable = self._icmp
        await self._serve(self.udp, "udp")
        assert self.udp._udp_transport is not None  # noqa: SLF001
        bound = self.udp._udp_transport.get_extra_info("sockname")  # noqa: SLF001
        self.port = int(bound[1])
        self.udp.local_addr = (self.advertised_host, self.port)
        if self.tcp:
            self.tcp_transport = TcpSipTransport(local_addr=(self.host, self.port))
            await self._serve(self.tcp_transport, "tcp")
            self.tcp_transport.local_addr = (self.advertised_host, self.port)
        log.info("SIP stack listening", extra={"port": self.port, "tcp": self.tcp})

    async def _serve(self, transport: SipTransport, name: str) -> None:
        uac = SipUAC(transport)
        uas = SipUAS(transport, uac=uac, user_agent="Bonmoniq")
        uas.on_invite = self._invite
        uas.on_bye = self._bye
        uas.on_reinvite = self._reinvite
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
            call.reject(480, "Temporarily Unavailable")
            return
        account_id = self.account_of(call.invite)
        if account_id is not None and not self.trusts(account_id, call.source_addr[0]):
            log.warning("INVITE refused: not from the account's registrar")
            with contextlib.suppress(Exception):
                call.reject(403, "Forbidden")
            return
        try:
            result = handler(call, account_id)
        except Exception as e:
            log.exception("INVITE handler failed", extra={"error": type(e).__name__})
            self._reject_unanswered(call)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._awaited(call, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _awaited(self, call: IncomingCall, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception as e:
            log.exception("INVITE handler failed", extra={"error": type(e).__name__})
            self._reject_unanswered(call)

    @staticmethod
    def _reject_unanswered(call: IncomingCall) -> None:
        if not call._answered:  # noqa: SLF001
            with contextlib.suppress(Exception):
                call.reject(500, "Server Internal Error")

    def _bye(self, call: IncomingCall, request: SipRequest) -> None:
        for listener in list(self._bye_listeners):
            try:
                listener(call, request)
            except Exception as e:
                log.warning("BYE listener failed", extra={"error": type(e).__name__})

    def on_bye(self, listener: Callable[[IncomingCall, SipRequest], None]) -> None:
        """Tell ``listener(call, bye)`` of each BYE the far end sends on an incoming call."""
        self._bye_listeners.append(listener)

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
