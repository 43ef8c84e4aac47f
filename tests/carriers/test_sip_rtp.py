"""The SIP media path over real loopback UDP: G.711 both ways, RFC 4733 keys, the 20 ms sender."""

from __future__ import annotations

import asyncio
import audioop
import math
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, OutputAudioRawFrame

from carriers.playback import PlaybackMarkFrame
from carriers.sip.codec import (
    PCMA,
    PCMU,
    EventDeduper,
    RtpMalformed,
    decode,
    encode,
    parse_event,
    parse_rtp,
)
from carriers.sip.media import RtpSocket, SipMediaCodec
from carriers.sip.rtp import Media, RtpSession, port_range
from telephony.sip_calls import media_address
from tests.sip_helpers import free_udp_port, read_pcap, rtp_packets

WITHIN = 5.0
SIPP = Path("/usr/share/sip-tester")
pytestmark = pytest.mark.skipif(not SIPP.exists(), reason="SIPp's pcaps (Debian sip-tester)")


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    n = int(8000 * seconds)
    return struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
    )


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds, for at most ``WITHIN`` seconds."""
    async with asyncio.timeout(WITHIN):
        while not check():  # noqa: ASYNC110 - the sockets have no event to wait on
            await asyncio.sleep(0.01)


class Peer:
    """The PBX's side: a plain UDP socket that records what it receives."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.got: list[bytes] = []

    def drain(self) -> list[bytes]:
        while True:
            try:
                self.got.append(self.sock.recv(2048))
            except BlockingIOError:
                return self.got

    def send(self, packets: list[bytes], to: tuple[str, int]) -> None:
        for p in packets:
            self.sock.sendto(p, to)

    def close(self) -> None:
        self.sock.close()


async def session(media: Media) -> tuple[RtpSession, list[bytes], list[str]]:
    audio: list[bytes] = []
    keys: list[str] = []
    rtp = RtpSession(media, audio.append, keys.append)
    port = free_udp_port(even=True)
    await rtp.open("127.0.0.1", [port])
    return rtp, audio, keys


def test_g711_decodes_to_16_bit() -> None:
    pcm = tone(0.2)
    for law in (PCMU, PCMA):
        back = decode(encode(pcm, law), law)
        assert len(back) == len(pcm)
        # 16-bit: the round trip keeps the tone far above 8-bit resolution
        error = audioop.rms(audioop.add(pcm, audioop.mul(back, 2, -1), 2), 2)
        assert error < audioop.rms(pcm, 2) / 20
        assert audioop.max(back, 2) > 256


def test_malformed_packets_are_refused() -> None:
    for bad in (b"", b"\x80\x00", b"\x40" + bytes(20), b"\xa0\x00" + bytes(10) + b"\xff"):
        with pytest.raises(RtpMalformed):
            parse_rtp(bad)
    with pytest.raises(RtpMalformed):
        parse_event(b"\x01")


def test_one_key_per_event_even_without_its_end() -> None:
    dedupe = EventDeduper()
    packets = [parse_rtp(p) for p in read_pcap(SIPP / "dtmf_2833_5.pcap")]
    keys = [k for p in packets for k in dedupe.feed(p.timestamp, parse_event(p.payload))]
    assert keys == ["5"]
    # an event whose end packets were lost is given when the next one starts
    lost = EventDeduper()
    assert lost.feed(100, parse_event(b"\x03\x0a\x00\xa0")) == []
    assert lost.feed(900, parse_event(b"\x0b\x0a\x00\xa0")) == ["3"]
    assert lost.feed(900, parse_event(b"\x0b\x8a\x01\x40")) == ["#"]
    assert lost.feed(900, parse_event(b"\x0b\x8a\x01\x40")) == []


async def test_sipp_dtmf_pcaps_become_one_key_each() -> None:
    peer = Peer()
    rtp, audio, keys = await session(Media(peer.address, PCMU, 101))
    try:
        for name in ("1", "star", "9", "pound", "0"):
            peer.send(read_pcap(SIPP / f"dtmf_2833_{name}.pcap"), ("127.0.0.1", rtp.port))
        await until(lambda: len(keys) >= 5)
        await until(lambda: rtp.received >= 50)
        assert keys == ["1", "*", "9", "#", "0"]
        assert audio == []
    finally:
        await rtp.close()
        peer.close()


async def test_sipp_alaw_pcap_arrives_as_16_bit_pcm() -> None:
    peer = Peer()
    rtp, audio, _ = await session(Media(peer.address, PCMA, 101))
    packets = read_pcap(SIPP / "g711a.pcap")
    try:
        for i in range(0, len(packets), 20):  # a burst larger than the socket buffer is lost
            peer.send(packets[i : i + 20], ("127.0.0.1", rtp.port))
            sent = min(i + 20, len(packets))
            await until(lambda: rtp.received == sent)  # noqa: B023 - awaited in this iteration
        expected = b"".join(audioop.alaw2lin(parse_rtp(p).payload, 2) for p in packets)
        assert b"".join(audio) == expected
        assert audioop.rms(expected, 2) > 0
    finally:
        await rtp.close()
        peer.close()


async def test_packets_from_another_host_or_malformed_are_dropped() -> None:
    peer = Peer()
    stranger = Peer("127.0.0.2")
    rtp, audio, _ = await session(Media(peer.address, PCMU, 101))
    try:
        stranger.send(rtp_packets(tone(0.1), PCMU), ("127.0.0.1", rtp.port))
        peer.send([b"garbage", b"\x80"], ("127.0.0.1", rtp.port))
        await until(lambda: rtp.dropped == 7)
        assert audio == [] and rtp.received == 0
    finally:
        await rtp.close()
        peer.close()
        stranger.close()


async def test_sends_to_the_sdp_address_in_20_ms_packets_with_silence_between() -> None:
    sdp_side = Peer()  # the address in the remote SDP
    source = Peer()  # where the PBX sends its own packets from: never answered to
    rtp, audio, _ = await session(Media(sdp_side.address, PCMU, 101))
    marked: list[str] = []
    try:
        source.send(rtp_packets(tone(0.1), PCMU), ("127.0.0.1", rtp.port))
        await until(lambda: len(audio) == 5)
        await until(lambda: len(sdp_side.drain()) >= 3)  # silence while the agent is quiet
        rtp.send(tone(0.5))
        rtp.mark(lambda: marked.append("said"))
        await until(lambda: bool(marked))
        await until(lambda: len(sdp_side.drain()) >= 30)
        assert source.drain() == []
        packets = [parse_rtp(p) for p in sdp_side.got]
        assert {p.payload_type for p in packets} == {PCMU}
        assert {p.ssrc for p in packets} == {packets[0].ssrc}
        assert packets[0].marker
        for a, b in zip(packets, packets[1:], strict=False):
            assert (b.sequence - a.sequence) & 0xFFFF == 1
            assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160
        assert all(len(p.payload) == 160 for p in packets)
        loud = [p for p in packets if audioop.rms(decode(p.payload, PCMU), 2) > 1000]
        assert len(loud) == 25  # 0.5 s of tone
        assert set(packets[0].payload) == {0xFF}  # silence first
    finally:
        await rtp.close()
        sdp_side.close()
        source.close()


async def test_clear_drops_unsent_audio_and_answers_marks() -> None:
    peer = Peer()
    rtp, _, _ = await session(Media(peer.address, PCMA, None))
    marked: list[str] = []
    try:
        rtp.send(tone(5.0))
        rtp.mark(lambda: marked.append("end"))
        await until(lambda: len(peer.drain()) >= 5)
        rtp.clear()
        assert marked == ["end"]
        sent = rtp.sent
        await until(lambda: rtp.sent >= sent + 10)
        tail = [parse_rtp(p) for p in peer.drain()][-5:]
        assert all(set(p.payload) == {0xD5} for p in tail)
    finally:
        await rtp.close()
        peer.close()


async def test_codec_and_socket_carry_frames_both_ways() -> None:
    peer = Peer()
    closed: list[bool] = []

    async def on_close() -> None:
        closed.append(True)

    socket_ = RtpSocket(on_close)
    rtp = RtpSession(Media(peer.address, PCMU, 101), socket_.audio, socket_.key)
    await rtp.open("127.0.0.1", [free_udp_port(even=True)])
    socket_.attach(rtp)
    codec = SipMediaCodec(socket_)
    acks: list[str] = []
    codec.on_played = lambda name, _received: acks.append(name)
    try:
        peer.send(rtp_packets(tone(0.2), PCMU), ("127.0.0.1", rtp.port))
        peer.send(read_pcap(SIPP / "dtmf_2833_7.pcap"), ("127.0.0.1", rtp.port))
        frames: list[object] = []
        while not any(isinstance(f, InputDTMFFrame) for f in frames):
            message = await asyncio.wait_for(socket_.receive(), 5)
            frame = await codec.deserialize(message.get("bytes") or message.get("text") or "")
            if frame is not None:
                frames.append(frame)
        audio = [f for f in frames if isinstance(f, InputAudioRawFrame)]
        assert audio and all(f.sample_rate == 16000 for f in audio)
        assert 0 < sum(len(f.audio) for f in audio) <= 0.2 * 32000  # less: the resampler delay
        assert [f.button.value for f in frames if isinstance(f, InputDTMFFrame)] == ["7"]
        out = OutputAudioRawFrame(audio=tone(0.2), sample_rate=8000, num_channels=1)
        payload = await codec.serialize(out)
        assert isinstance(payload, bytes)
        await socket_.send_bytes(payload)
        assert await codec.serialize(PlaybackMarkFrame(message="m1")) is None
        await until(lambda: acks == ["m1"])
        await socket_.close()
        await socket_.close()
        assert closed == [True]
        assert (await socket_.receive())["type"] == "websocket.disconnect"
    finally:
        await rtp.close()
        peer.close()


def test_port_range() -> None:
    assert port_range("40000-40009") == range(40000, 40010)
    with pytest.raises(ValueError):
        port_range("9-1")


async def test_a_caller_silent_on_the_wire_is_reported_once() -> None:
    peer = Peer()
    lost: list[bool] = []
    rtp = RtpSession(Media(peer.address, PCMU, 101), lambda _: None, lambda _: None,
                     on_idle=lambda: lost.append(True), idle_s=0.2)  # fmt: skip
    await rtp.open("127.0.0.1", [free_udp_port(even=True)])
    try:
        await until(lambda: bool(lost))
        sent = rtp.sent
        await until(lambda: rtp.sent >= sent + 20)
        assert lost == [True]
    finally:
        await rtp.close()
        peer.close()


def test_keys_are_given_once_across_a_timestamp_wrap() -> None:
    dedupe = EventDeduper()
    keys: list[str] = []
    # 70 events, 800 samples apart, whose timestamps wrap past 2**32 half way
    for i in range(70):
        ts = (2**32 - 35 * 800 + i * 800) & 0xFFFFFFFF
        start, end = b"\x05\x0a\x00\xa0", b"\x05\x8a\x03\x20"
        for payload in (start, end, end, end):  # an end packet is sent three times
            keys += dedupe.feed(ts, parse_event(payload))
    assert keys == ["5"] * 70


async def _unsendable_address_on_uvloop(remote: tuple[str, int]) -> None:
    lost: list[bool] = []
    rtp = RtpSession(Media(remote, PCMU, 101), lambda _: None, lambda _: None,
                     on_idle=lambda: lost.append(True), idle_s=0.2)  # fmt: skip
    await rtp.open("127.0.0.1", [free_udp_port(even=True)])
    await until(lambda: rtp.send_errors >= 5 and bool(lost))
    assert rtp.sent == 0
    await rtp.close()  # never raises


def test_an_address_the_loop_cannot_send_to_never_stops_the_sender() -> None:
    import uvloop  # the loop production runs on (app/cli.py)

    for remote in (("pbx.example.net", 40000), ("::1", 40000)):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_unsendable_address_on_uvloop(remote))


def test_only_an_ipv4_literal_and_a_usable_port_are_a_media_address() -> None:
    assert media_address(("192.0.2.7", 40000)) == ("192.0.2.7", 40000)
    for bad in (("pbx.example.net", 40000), ("2001:db8::1", 40000), ("192.0.2.7", 0),
                ("192.0.2.7", 70000), ("", 40000)):  # fmt: skip
        assert media_address(bad) is None
    assert media_address(None) is None


def test_media_addresses_no_pbx_may_point_rtp_at() -> None:
    # private LAN addresses are where PBXs live: kept
    for good in ("10.1.2.3", "172.16.0.9", "192.168.1.20", "198.51.100.7"):
        assert media_address((good, 40000), "10.1.2.3") == (good, 40000)
    for bad in ("224.0.0.1", "239.1.2.3", "169.254.1.1", "0.0.0.0", "127.0.0.1", "127.8.9.10"):
        assert media_address((bad, 40000), "10.1.2.3") is None
    # loopback only for a PBX on this host (its INVITE came over loopback)
    assert media_address(("127.0.0.1", 40000), "127.0.0.1") == ("127.0.0.1", 40000)
    assert media_address(("127.0.0.1", 40000)) is None
    assert media_address(("224.0.0.1", 40000), "127.0.0.1") is None


async def test_a_caller_sending_only_rtcp_is_reported_lost() -> None:
    peer = Peer()
    lost: list[bool] = []
    rtp = RtpSession(Media(peer.address, PCMU, 101), lambda _: None, lambda _: None,
                     on_idle=lambda: lost.append(True), idle_s=0.2)  # fmt: skip
    await rtp.open("127.0.0.1", [free_udp_port(even=True)])
    try:
        async with asyncio.timeout(15):
            while not lost:  # RTCP keeps coming, on both ports, but no RTP
                peer.send([rtcp_report()], ("127.0.0.1", rtp.port))
                peer.send([rtcp_report()], ("127.0.0.1", rtp.port + 1))
                await asyncio.sleep(0.02)
        assert lost == [True] and rtp.rtcp > 0 and rtp.received == 0
    finally:
        await rtp.close()
        peer.close()


def rtcp_report(ssrc: int = 0x5EED) -> bytes:
    """An RTCP compound packet: a sender report and an SDES with a CNAME (RFC 3550 6.4, 6.5)."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0, 0, 0, 0, 0)
    cname = b"\x01\x04peer\x00\x00"
    sdes = struct.pack("!BBHI", 0x81, 202, (4 + len(cname)) // 4, ssrc) + cname
    return sr + sdes


async def test_rtcp_on_the_rtp_port_or_the_next_is_ignored_and_audio_goes_on() -> None:
    peer = Peer()
    rtp, audio, _ = await session(Media(peer.address, PCMU, 101))
    try:
        # multiplexed on the RTP port (rtcp-mux), and on the RTCP port above it
        peer.send([rtcp_report(), rtcp_report()], ("127.0.0.1", rtp.port))
        peer.send([rtcp_report()], ("127.0.0.1", rtp.port + 1))
        await until(lambda: rtp.rtcp == 3)
        assert audio == [] and rtp.dropped == 0 and rtp.received == 0
        packets = rtp_packets(tone(0.1), PCMU)
        peer.send(packets, ("127.0.0.1", rtp.port))
        await until(lambda: len(audio) == len(packets))
        assert rtp.sent > 0
    finally:
        await rtp.close()
        peer.close()
    # the RTCP port is given back with the RTP one
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", rtp.port + 1))
