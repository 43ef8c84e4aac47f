"""Playback acknowledgements: each codec sends the announcement's mark in its carrier's shape,
hears the carrier's echo, and says where in the caller's audio it came back."""

from __future__ import annotations

import audioop
import base64
import json
from types import SimpleNamespace

from carriers.playback import PlaybackAcks, PlaybackMarkFrame
from carriers.sinch.media import SinchMediaCodec
from carriers.telnyx.media import TelnyxMediaCodec
from carriers.telnyx.simulator import TelnyxWire
from carriers.twilio.media import TwilioMediaCodec
from carriers.twilio.simulator import TwilioWire

SID = "MZ" + "0" * 32
SILENCE_8K = bytes(320)  # 20 ms of 16-bit PCM at 8 kHz


async def ready(codec: PlaybackAcks) -> list[tuple[str, int]]:
    heard: list[tuple[str, int]] = []
    codec.on_played = lambda name, at: heard.append((name, at))
    await codec.setup(SimpleNamespace(audio_in_sample_rate=16000))  # type: ignore[attr-defined]
    return heard


async def test_twilio_sends_a_mark_and_hears_its_echo_at_a_point_of_the_caller_stream() -> None:
    codec = TwilioMediaCodec(SID)
    heard = await ready(codec)
    sent = json.loads(await codec.serialize(PlaybackMarkFrame(message="announcement")))
    assert sent == {"event": "mark", "streamSid": SID, "mark": {"name": "announcement"}}
    wire = TwilioWire(SID)
    frames = [await codec.deserialize(wire.encode(SILENCE_8K)) for _ in range(10)]
    passed = sum(len(f.audio) for f in frames if f is not None)
    # Twilio's side: the mark comes back (once the audio before it has played).
    echo = wire.decode(json.dumps(sent))
    assert echo.reply is None and echo.played_reply is not None
    assert await codec.deserialize(echo.played_reply) is None
    assert heard == [("announcement", passed)] and passed == codec.received > 0


async def test_telnyx_sends_a_mark_and_hears_its_echo() -> None:
    codec = TelnyxMediaCodec("s1")
    heard = await ready(codec)
    sent = json.loads(await codec.serialize(PlaybackMarkFrame(message="announcement")))
    assert sent == {"event": "mark", "mark": {"name": "announcement"}}
    wire = TelnyxWire("s1")
    for _ in range(10):
        await codec.deserialize(wire.encode(SILENCE_8K))
    echo = wire.decode(json.dumps(sent))
    assert echo.played_reply is not None
    await codec.deserialize(echo.played_reply)
    assert heard == [("announcement", codec.received)] and codec.received > 0


async def test_a_malformed_mark_is_ignored() -> None:
    codec = TwilioMediaCodec(SID)
    heard = await ready(codec)
    for mark in ("x", None, {"name": 5}):
        msg = {"event": "mark", "streamSid": SID, "mark": mark}
        assert await codec.deserialize(json.dumps(msg)) is None
    assert heard == []


async def test_sinch_counts_audio_but_acknowledges_no_playback() -> None:
    codec = SinchMediaCodec(16000)
    heard = await ready(codec)
    assert not codec.acknowledges_playback
    assert TwilioMediaCodec.acknowledges_playback and TelnyxMediaCodec.acknowledges_playback
    assert await codec.serialize(PlaybackMarkFrame(message="announcement")) is None
    await codec.deserialize(bytes(640))
    assert codec.received == 640 and heard == []


def test_wire_audio_is_mulaw() -> None:  # the simulator's frames are what the codecs read
    msg = json.loads(TwilioWire(SID).encode(SILENCE_8K))
    assert base64.b64decode(msg["media"]["payload"]) == audioop.lin2ulaw(SILENCE_8K, 2)
