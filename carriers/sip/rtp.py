"""One call's RTP session: a UDP endpoint, G.711 both ways in 20 ms packets, keypad events.

Audio is sent to the address of the remote SDP (never to where packets come from), one
160-sample packet every 20 ms on a monotonic clock: the agent's audio when there is some,
G.711 silence otherwise, so a PBX never sees the stream stop. Packets are accepted from the
remote SDP's host only; caller audio is handed on as 16-bit PCM at 8000 Hz and each RFC 4733
event as one key. RTCP is read and ignored, whether it comes multiplexed on the RTP port
(RFC 5761) or on the port above it, which is held for the call. A caller that sends no RTP
for a minute is reported lost (RTCP alone does not keep it: a peer sending only RTCP is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from carriers.sip.codec import (
    FRAME_SAMPLES,
    G711,
    SILENCE,
    EventDeduper,
    RtpMalformed,
    RtpPacket,
    build_rtp,
    decode,
    encode,
    parse_event,
    parse_rtp,
)

log = logging.getLogger(__name__)
FRAME_S = 0.02
#: Behind the clock by more than this, the sender starts its clock again instead of bursting.
MAX_LAG_S = 0.2
#: No packet from the caller for this long: the call's media is lost (the PBX went away).
IDLE_S = 60.0
_PCM_FRAME = FRAME_SAMPLES * 2  # bytes of 16-bit PCM in one packet
#: Second octet of an RTCP packet (its packet type, RFC 5761 4): SR, RR, SDES, BYE, APP, FB, XR.
_RTCP_TYPES = range(192, 224)


def is_rtcp(data: bytes) -> bool:
    """Whether ``data`` is an RTCP packet (version 2, an RTCP packet type)."""
    return len(data) >= 8 and data[0] >> 6 == 2 and data[1] in _RTCP_TYPES


class NoRtpPort(RuntimeError):
    """Every port of the RTP range is in use."""


def port_range(spec: str) -> range:
    """``"40000-40999"`` as a range of ports (both ends included)."""
    low, _, high = spec.partition("-")
    first, last = int(low), int(high or low)
    if not 0 < first <= last < 65536:
        raise ValueError(f"bad RTP port range {spec!r}")
    return range(first, last + 1)


@dataclass(frozen=True)
class Media:
    """What the SDP offer/answer settled: where to send, the codec and the DTMF payload type."""

    remote: tuple[str, int]
    payload_type: int
    dtmf_payload_type: int | None = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self.session = session

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.session._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the PBX has not opened its port yet: not fatal.
        log.debug("RTP send error", extra={"error": type(exc).__name__})


class _RtcpSink(asyncio.DatagramProtocol):
    """The port above the RTP port: RTCP sent there is counted and ignored."""

    def __init__(self, session: RtpSession) -> None:
        self.session = session

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.session._rtcp_received(data, addr)


class RtpSession:
    """A call's RTP stream; :meth:`open` binds it, :meth:`close` ends it."""

    def __init__(
        self,
        media: Media,
        on_audio: Callable[[bytes], None],
        on_key: Callable[[str], None],
        on_idle: Callable[[], None] | None = None,
        idle_s: float = IDLE_S,
    ) -> None:
        """Not bound yet; ``on_audio`` gets 16-bit 8 kHz PCM, ``on_key`` each keypad key.

        ``on_idle`` is called once when no RTP packet has come from the caller for ``idle_s``.
        """
        if media.payload_type not in G711:
            raise ValueError(f"unsupported payload type {media.payload_type}")
        self.media = media
        self._on_audio = on_audio
        self._on_key = on_key
        self._on_idle = on_idle
        self.idle_s = idle_s
        self._heard = time.monotonic()
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._out = bytearray()  # 16-bit PCM not sent yet
        self._sent = 0  # bytes of agent audio sent so far
        self._queued = 0  # bytes of agent audio queued so far
        self._marks: list[tuple[int, Callable[[], None]]] = []
        self._events = EventDeduper()
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self.port = 0
        #: Counts for logs and tests: packets received, dropped, sent, not sendable, RTCP.
        self.received = self.dropped = self.sent = self.send_errors = self.rtcp = 0

    async def open(self, host: str, ports: Iterable[int]) -> int:
        """Bind on ``host`` at the first free even port of ``ports`` (random start); the port."""
        candidates = [p for p in ports if p % 2 == 0] or list(ports)
        start = random.randrange(len(candidates)) if candidates else 0
        loop = asyncio.get_running_loop()
        for port in candidates[start:] + candidates[:start]:
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), local_addr=(host, port)
                )
            except OSError:
                continue
            self._transport = transport
            self.port = port
            with contextlib.suppress(OSError):  # taken: the peer's RTCP there is lost, no harm
                self._rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtcpSink(self), local_addr=(host, port + 1)
                )
            self._heard = time.monotonic()
            self._sender = asyncio.create_task(self._send_loop(), name="rtp-sender")
            return port
        raise NoRtpPort("no free port in the RTP range")

    async def close(self) -> None:
        """Stop sending and release the port (idempotent)."""
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass
            except Exception as e:  # the sender died: closing still releases the port
                log.warning("RTP sender failed", extra={"error": type(e).__name__})
            self._sender = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._rtcp is not None:
            self._rtcp.close()
            self._rtcp = None
        await asyncio.sleep(0)  # the transports close their sockets on the loop's next turn

    # --- sending ---

    def send(self, pcm: bytes) -> None:
        """Queue 16-bit 8 kHz PCM for the caller; it goes out in 20 ms packets."""
        self._out += pcm
        self._queued += len(pcm)

    def mark(self, played: Callable[[], None]) -> None:
        """Call ``played`` once everything queued before it has been sent."""
        if self._queued <= self._sent:
            played()
        else:
            self._marks.append((self._queued, played))

    def clear(self) -> None:
        """Drop the agent audio not sent yet (the caller barged in); marks waiting fire now."""
        self._sent += len(self._out)
        self._out.clear()
        self._fire_marks()

    def _fire_marks(self) -> None:
        while self._marks and self._marks[0][0] <= self._sent:
            _, played = self._marks.pop(0)
            played()

    def _next_payload(self) -> bytes:
        pt = self.media.payload_type
        if not self._out:
            return SILENCE[pt]
        chunk = bytes(self._out[:_PCM_FRAME])
        del self._out[:_PCM_FRAME]
        self._sent += len(chunk)
        if len(chunk) < _PCM_FRAME:
            chunk = chunk.ljust(_PCM_FRAME, b"\x00")
        return encode(chunk, pt)

    def _send_one(self) -> None:
        payload = self._next_payload()
        packet = RtpPacket(
            self.media.payload_type, self._seq, self._ts, self._ssrc, self.sent == 0, payload
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        if self._transport is not None:
            try:
                self._transport.sendto(build_rtp(packet), self.media.remote)
            except (OSError, ValueError):  # an address the loop cannot send to: a lost packet
                self.send_errors += 1
            else:
                self.sent += 1
        self._fire_marks()

    async def _send_loop(self) -> None:
        start = time.monotonic()
        n = 0
        while True:
            self._send_one()
            if self._on_idle is not None and time.monotonic() - self._heard > self.idle_s:
                idle, self._on_idle = self._on_idle, None
                idle()
            n += 1
            due = start + n * FRAME_S
            lag = time.monotonic() - due
            if lag > MAX_LAG_S:  # the loop was held up: start the clock again, no burst
                start, n = time.monotonic(), 0
                continue
            await asyncio.sleep(max(0.0, -lag))

    # --- receiving ---

    def _rtcp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] == self.media.remote[0] and is_rtcp(data):
            self.rtcp += 1

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.media.remote[0]:
            self.dropped += 1
            return
        if is_rtcp(data):  # multiplexed RTCP (rtcp-mux): not audio
            self._rtcp_received(data, addr)
            return
        try:
            packet = parse_rtp(data)
        except RtpMalformed:
            self.dropped += 1
            return
        self.received += 1
        self._heard = time.monotonic()
        if packet.payload_type in G711:  # the negotiated law; the other one decodes as well
            self._on_audio(decode(packet.payload, packet.payload_type))
        elif packet.payload_type == self.media.dtmf_payload_type:
            try:
                event = parse_event(packet.payload)
            except RtpMalformed:
                self.dropped += 1
                return
            for key in self._events.feed(packet.timestamp, event):
                self._on_key(key)
        elif packet.payload_type == 13:  # comfort noise (RFC 3389): silence here
            return
        else:
            self.dropped += 1
