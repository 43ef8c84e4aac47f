"""RTP packets, G.711 payloads and RFC 4733 telephone events: pure functions, no sockets.

G.711 is decoded straight to 16-bit linear PCM (``audioop`` with sample width 2), the width
the pipeline works in; nothing is narrowed to 8 bits on the way.
"""

from __future__ import annotations

import audioop
import struct
from collections import deque
from dataclasses import dataclass

#: Static RTP payload types of G.711 (RFC 3551), 8000 Hz.
PCMU = 0
PCMA = 8
G711 = {PCMU: "PCMU", PCMA: "PCMA"}
CLOCK_RATE = 8000
#: Samples (and G.711 bytes) in one 20 ms packet.
FRAME_SAMPLES = 160
#: One 20 ms packet of silence in each law.
SILENCE = {PCMU: b"\xff" * FRAME_SAMPLES, PCMA: b"\xd5" * FRAME_SAMPLES}
#: RFC 4733 events 0-15 as keypad keys.
EVENT_KEYS = "0123456789*#ABCD"
#: The largest payload accepted (well over a 20 ms frame; anything bigger is dropped).
MAX_PAYLOAD = 1500
#: Ended events remembered (by RTP timestamp, newest kept) so their repeated end packets are
#: ignored.
_RECENT_EVENTS = 64
_HEADER = struct.Struct("!BBHII")


class RtpMalformed(ValueError):
    """A datagram that is not an RTP version 2 packet."""


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet: the header fields that matter here and the payload."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet (RFC 3550): CSRCs, header extension and padding are skipped."""
    if len(data) < _HEADER.size:
        raise RtpMalformed("shorter than an RTP header")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpMalformed("not RTP version 2")
    offset = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 4 bytes, then its length in 32-bit words
        if len(data) < offset + 4:
            raise RtpMalformed("truncated header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: its length is the last byte
        end -= data[-1]
    if offset > end or end - offset > MAX_PAYLOAD:
        raise RtpMalformed("bad payload length")
    return RtpPacket(second & 0x7F, seq, ts, ssrc, bool(second & 0x80), data[offset:end])


def build_rtp(packet: RtpPacket) -> bytes:
    """An RTP version 2 packet without CSRCs, extension or padding."""
    second = (0x80 if packet.marker else 0) | (packet.payload_type & 0x7F)
    header = _HEADER.pack(
        0x80, second, packet.sequence & 0xFFFF, packet.timestamp & 0xFFFFFFFF, packet.ssrc
    )
    return header + packet.payload


def decode(payload: bytes, payload_type: int) -> bytes:
    """A G.711 payload as 16-bit little-endian linear PCM at 8000 Hz."""
    if payload_type == PCMU:
        return audioop.ulaw2lin(payload, 2)
    if payload_type == PCMA:
        return audioop.alaw2lin(payload, 2)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def encode(pcm: bytes, payload_type: int) -> bytes:
    """16-bit linear PCM at 8000 Hz as a G.711 payload of ``payload_type``."""
    if payload_type == PCMU:
        return audioop.lin2ulaw(pcm, 2)
    if payload_type == PCMA:
        return audioop.lin2alaw(pcm, 2)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


@dataclass(frozen=True)
class TelephoneEvent:
    """An RFC 4733 telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def key(self) -> str | None:
        """The keypad key of a DTMF event (0-15), ``None`` for other events."""
        return EVENT_KEYS[self.event] if self.event < len(EVENT_KEYS) else None


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse an RFC 4733 event payload (the first 4 bytes; redundant blocks are ignored)."""
    if len(payload) < 4:
        raise RtpMalformed("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class EventDeduper:
    """Turns the packets of RFC 4733 events into one key per event.

    An event is one RTP timestamp: its packets repeat it, and its end packet is sent three
    times. The key is given once, on the first end packet; an event whose end packets were all
    lost is given when a packet of a later event arrives.
    """

    def __init__(self) -> None:
        """No event seen yet."""
        self._current: tuple[int, str] | None = None  # timestamp, key of the open event
        self._done: set[int] = set()  # timestamps of the recent events that ended
        self._order: deque[int] = deque()  # the same, oldest first

    def feed(self, timestamp: int, event: TelephoneEvent) -> list[str]:
        """The keys that this packet completes (none, one, or two with a lost end)."""
        keys: list[str] = []
        if timestamp in self._done:
            return keys
        if self._current is not None and self._current[0] != timestamp:
            keys.append(self._current[1])  # the previous event never ended: give it now
            self._finish(self._current[0])
        key = event.key
        if key is None:
            return keys
        if event.end:
            keys.append(key)
            self._finish(timestamp)
        else:
            self._current = (timestamp, key)
        return keys

    def _finish(self, timestamp: int) -> None:
        self._current = None
        if timestamp in self._done:
            return
        self._done.add(timestamp)
        self._order.append(timestamp)
        if len(self._order) > _RECENT_EVENTS:  # only recent events can repeat: forget the oldest
            self._done.discard(self._order.popleft())
