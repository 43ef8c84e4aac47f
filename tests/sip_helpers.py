"""SIP test helpers: RTP in pcap files (SIPp's ``play_pcap_audio``), free UDP ports, SIPp runs."""

from __future__ import annotations

import socket
import struct
import subprocess
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


#: SIPp as a registrar (tests/fixtures/sipp/registrar.xml) and the credentials it accepts.
REGISTRAR_SCENARIO = Path(__file__).resolve().parent / "fixtures" / "sipp" / "registrar.xml"
REGISTRAR_USERNAME, REGISTRAR_PASSWORD = "1001", "sip-pw-4f6e6365"


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
