"""SIP test helpers: RTP in pcap files (SIPp's ``play_pcap_audio``), free UDP ports, SIPp runs,
and a bare SIP peer on a loopback socket (UDP or TCP) that writes requests by hand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from carriers.sip.codec import FRAME_SAMPLES, RtpPacket, build_rtp, encode

_MAC_DST = bytes.fromhex("020000000002")
_MAC_SRC = bytes.fromhex("020000000001")


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rtp_packets(pcm8k: bytes, payload_type: int, ssrc: int = 0x5EED) -> list[bytes]:
    """16-bit 8 kHz PCM as 20 ms G.711 RTP packets (the last one padded with silence)."""
    g711 = encode(pcm8k, payload_type)
    fill = b"\xff" if payload_type == 0 else b"\xd5"
    packets = []
    for i, off in enumerate(range(0, len(g711), FRAME_SAMPLES)):
        payload = g711[off : off + FRAME_SAMPLES].ljust(FRAME_SAMPLES, fill)
        packets.append(
            build_rtp(RtpPacket(payload_type, i, i * FRAME_SAMPLES, ssrc, i == 0, payload))
        )
    return packets


def write_pcap(
    path: Path, packets: list[bytes], src_port: int = 6000, dst_port: int = 6002
) -> None:
    """``packets`` (UDP payloads) as an Ethernet/IPv4/UDP pcap, one every 20 ms."""
    src4, dst4 = socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, rtp in enumerate(packets):
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0x4000, 64, 17, 0, src4, dst4
        )
        ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
        frame = _MAC_DST + _MAC_SRC + b"\x08\x00" + ip + udp
        micros = i * 20_000
        out.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))


def read_pcap(path: Path) -> list[bytes]:
    """The UDP payloads of an Ethernet/IPv4 pcap (as SIPp ships them), in order."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    offset, payloads = 24, []
    while offset + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(f"{endian}IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 17:
            continue
        udp = frame[14 + ihl :]
        (length,) = struct.unpack_from("!H", udp, 4)
        payloads.append(udp[8:length])
    return payloads


def free_udp_port(even: bool = False) -> int:
    """A UDP port free on 127.0.0.1 now (even when asked: RTP's convention)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not even or port % 2 == 0:
            return port
    raise RuntimeError("no free UDP port")


#: SIPp scenarios (tests/fixtures/sipp).
SIPP = Path(__file__).resolve().parent / "fixtures" / "sipp"
#: SIPp as a registrar (tests/fixtures/sipp/registrar.xml) and the credentials it accepts.
REGISTRAR_SCENARIO = SIPP / "registrar.xml"
REGISTRAR_USERNAME, REGISTRAR_PASSWORD = "1001", "sip-pw-4f6e6365"


async def until(check: Callable[[], bool], within: float = 15.0) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


class Registrar:
    """SIPp running a registrar scenario on a free loopback port; its messages logged to a file."""

    def __init__(
        self,
        work: Path,
        expires: int = 120,
        transport: str = "udp",
        scenario: Path = REGISTRAR_SCENARIO,
    ) -> None:
        """Start SIPp granting ``expires`` seconds to each good REGISTER (over ``transport``)."""
        self.port = free_udp_port()
        self.transport = transport
        self.messages = work / f"sipp-{self.port}-messages.log"
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
             "-mp", str(free_udp_port()), "-key", "expires", str(expires), "-nostdin",
             "-timeout", "120s", "-trace_msg", "-message_file", str(self.messages),
             "-t", "u1" if transport == "udp" else "t1"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def started(self) -> None:
        """Wait until SIPp listens."""
        await until(lambda: self.proc.poll() is None and self.bound(), within=10)

    def bound(self) -> bool:
        """Whether SIPp holds its port (it is then listening)."""
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError:
                return True
        return False

    def registers(self) -> int:
        """How many REGISTER requests reached SIPp so far."""
        if not self.messages.exists():
            return 0
        return sum(
            1 for line in self.messages.read_text(errors="replace").splitlines()
            if line.startswith("REGISTER sip:")
        )  # fmt: skip

    def stop(self) -> None:
        """Kill SIPp."""
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def registrar(
    tmp_path: Path, expires: int = 120, transport: str = "udp", scenario: Path = REGISTRAR_SCENARIO
) -> AsyncIterator[Registrar]:
    """A listening :class:`Registrar`, killed on exit."""
    r = Registrar(tmp_path, expires, transport, scenario)
    try:
        await r.started()
        yield r
    finally:
        r.stop()


def sdp(port: int, proto: str = "RTP/AVP", host: str = "127.0.0.1") -> str:
    """An SDP offer of PCMU and telephone-event at ``host:port`` over ``proto``."""
    return (
        f"v=0\r\no=peer 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )


class SipPeer:
    """A PBX written by hand: one loopback socket (UDP, or TCP connected to ``stack_port``)."""

    def __init__(self, stack_port: int, transport: str = "udp", host: str = "127.0.0.1") -> None:
        self.stack = ("127.0.0.1", stack_port)
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((host, 0))
        if transport == "tcp":
            self.sock.connect(self.stack)
        self.sock.setblocking(False)
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self._buffer = b""
        #: Requests read while waiting for a response.
        self.requests: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str) -> None:
        """Send one message (``\n`` line ends become CRLF; Content-Length is added)."""
        head, _, body = text.replace("\r\n", "\n").partition("\n\n")
        body = body.replace("\n", "\r\n")
        data = (head.replace("\n", "\r\n") + f"\r\nContent-Length: {len(body)}\r\n\r\n"
                + body).encode()  # fmt: skip
        if self.transport == "udp":
            self.sock.sendto(data, self.stack)
        else:
            self.sock.sendall(data)

    async def receive(self, within: float = 5.0) -> str:
        """The next message from the stack."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            if self.transport == "udp":
                return (await loop.sock_recv(self.sock, 65535)).decode()
            while True:
                head, sep, rest = self._buffer.partition(b"\r\n\r\n")
                if sep:
                    length = 0
                    for line in head.split(b"\r\n"):
                        name, _, value = line.partition(b":")
                        if name.strip().lower() in (b"content-length", b"l"):
                            length = int(value.strip())
                    if len(rest) >= length:
                        self._buffer = rest[length:]
                        return (head + sep + rest[:length]).decode()
                chunk = await loop.sock_recv(self.sock, 65535)
                if not chunk:
                    raise ConnectionError("the stack closed the connection")
                self._buffer += chunk

    async def until_status(self, at_least: int = 200, within: float = 5.0) -> str:
        """Responses until one of status ``at_least`` or more (requests in between are kept)."""
        while True:
            message = await self.receive(within)
            if message.startswith("SIP/2.0 ") and status(message) >= at_least:
                return message
            if not message.startswith("SIP/2.0 "):
                self.requests.append(message)

    def via(self, branch: str) -> str:
        return (
            f"Via: SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch=z9hG4bK{branch}"
        )

    def invite(self, user: str, call_id: str, body: str = "", branch: str = "") -> str:
        """An INVITE for ``user`` (sent with :meth:`send`)."""
        branch = branch or call_id
        typed = "Content-Type: application/sdp\n" if body else ""
        return (
            f"INVITE sip:{user}@127.0.0.1:{self.stack[1]} SIP/2.0\n{self.via(branch)}\n"
            f"From: <sip:+4930123456@{self.host}>;tag=peer\nTo: <sip:{user}@127.0.0.1>\n"
            f"Call-ID: {call_id}\nCSeq: 1 INVITE\nMax-Forwards: 70\n"
            f"Contact: <sip:peer@{self.host}:{self.port}>\n{typed}\n{body}"
        )

    def cancel(self, user: str, call_id: str, branch: str = "") -> str:
        """The CANCEL of the INVITE :meth:`invite` wrote (same branch, CSeq 1)."""
        return (
            f"CANCEL sip:{user}@127.0.0.1:{self.stack[1]} SIP/2.0\n{self.via(branch or call_id)}\n"
            f"From: <sip:+4930123456@{self.host}>;tag=peer\nTo: <sip:{user}@127.0.0.1>\n"
            f"Call-ID: {call_id}\nCSeq: 1 CANCEL\nMax-Forwards: 70\n\n"
        )

    def in_dialog(self, method: str, answer: str, cseq: int, user: str = "x") -> str:
        """``method`` (ACK, BYE) in the dialog that ``answer`` (our INVITE's answer) made."""
        to = header(answer, "To")
        call_id = header(answer, "Call-ID")
        return (
            f"{method} sip:{user}@127.0.0.1:{self.stack[1]} SIP/2.0\n{self.via(method + call_id + str(cseq))}\n"
            f"From: <sip:+4930123456@{self.host}>;tag=peer\nTo: {to}\n"
            f"Call-ID: {call_id}\nCSeq: {cseq if method != 'ACK' else 1} {method}\nMax-Forwards: 70\n\n"
        )

    def reply(self, request: str, code: int, reason: str, body: str = "", typed: str = "") -> str:
        """A response to ``request`` (Via, From, To, Call-ID and CSeq copied)."""
        lines = [f"SIP/2.0 {code} {reason}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            lines += [f"{name}: {v}" for v in headers(request, name)]
        if typed:
            lines.append(f"Content-Type: {typed}")
        return "\n".join(lines) + "\n\n" + body


def status(message: str) -> int:
    """The status code of a response."""
    return int(message.split(" ", 2)[1])


def headers(message: str, name: str) -> list[str]:
    """Every value of header ``name`` in ``message``."""
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    out = []
    for line in head:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


def header(message: str, name: str) -> str:
    """The first value of header ``name`` in ``message`` (empty if none)."""
    found = headers(message, name)
    return found[0] if found else ""


class SippRegistrar:
    """SIPp answering REGISTERs (digest checked) on a free loopback port until stopped."""

    def __init__(self, work: Path, expires: int = 120) -> None:
        """Start SIPp in ``work``, granting ``expires`` seconds to each good REGISTER."""
        self.port = free_udp_port()
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(REGISTRAR_SCENARIO), "-i", "127.0.0.1", "-p", str(self.port),
             "-mp", str(free_udp_port()), "-key", "expires", str(expires), "-nostdin",
             "-timeout", "300s"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def listening(self) -> bool:
        """Whether SIPp runs and holds its port."""
        if self.proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError:
                return True
        return False

    def stop(self) -> None:
        """Kill SIPp."""
        self.proc.kill()
        self.proc.wait(timeout=10)
