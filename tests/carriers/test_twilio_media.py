"""The Twilio media codec: valid messages become frames, malformed ones are dropped and reported."""

from __future__ import annotations

import audioop
import base64
import json
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, InterruptionFrame

from carriers.errors import MediaMalformed
from carriers.twilio.media import TwilioMediaCodec, parse_message, parse_start

SID = "MZ" + "0" * 32


def media(payload: str, sid: str = SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": sid,
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
        }
    )


async def codec_with_rate(rate: int = 16000) -> tuple[TwilioMediaCodec, list[str]]:
    rejected: list[str] = []
    codec = TwilioMediaCodec(SID, on_invalid=rejected.append)
    setup = SimpleNamespace(audio_in_sample_rate=rate, audio_out_sample_rate=8000)
    await codec.setup(setup)  # type: ignore[arg-type]  # what the pipeline hands every serializer
    return codec, rejected


async def test_media_becomes_16k_pcm() -> None:
    codec, rejected = await codec_with_rate()
    tone = audioop.lin2ulaw((b"\x10\x27" + b"\xf0\xd8") * 80, 2)  # 160 samples: 20 ms at 8 kHz
    frames = [await codec.deserialize(media(base64.b64encode(tone).decode())) for _ in range(25)]
    audio = [f for f in frames if f is not None]
    assert audio and all(
        isinstance(f, InputAudioRawFrame) and f.sample_rate == 16000 for f in audio
    )
    # 0.5 s in at 8 kHz comes out as (close to) 0.5 s of 16-bit samples at 16 kHz.
    total = sum(len(f.audio) for f in audio)  # type: ignore[union-attr]
    assert 0.4 * 16000 * 2 < total <= 0.5 * 16000 * 2
    assert rejected == []


async def test_dtmf_becomes_a_keypad_frame() -> None:
    codec, _ = await codec_with_rate()
    frame = await codec.deserialize(
        json.dumps(
            {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "9"}}
        )
    )
    assert isinstance(frame, InputDTMFFrame) and frame.button.value == "9"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"event": "dance"}), "unknown event"),
        (media("@@@not-base64@@@"), "not base64"),
        (media("AAAA", sid="MZ" + "1" * 32), "unknown stream"),
        (json.dumps({"event": "media", "streamSid": SID}), "without payload"),
        (media(base64.b64encode(b"\xff" * 50_000).decode()), "too large"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "Z"}}), "DTMF"),
    ],
)
async def test_malformed_messages_are_dropped_and_reported(raw: str, reason: str) -> None:
    codec, rejected = await codec_with_rate()
    assert await codec.deserialize(raw) is None
    assert len(rejected) == 1 and reason in rejected[0]


async def test_binary_frames_are_rejected() -> None:
    codec, rejected = await codec_with_rate()
    assert await codec.deserialize(b"\x00\x01") is None
    assert "binary" in rejected[0]


async def test_interruption_becomes_clear_and_audio_becomes_media() -> None:
    from pipecat.frames.frames import OutputAudioRawFrame

    codec, _ = await codec_with_rate()
    assert json.loads(await codec.serialize(InterruptionFrame())) == {
        "event": "clear",
        "streamSid": SID,
    }
    out = json.loads(await codec.serialize(OutputAudioRawFrame(b"\x00\x10" * 160, 8000, 1)))
    assert out["event"] == "media" and out["streamSid"] == SID
    assert len(base64.b64decode(out["media"]["payload"])) == 160  # 20 ms of 8 kHz mu-law


def test_start_message_parsing() -> None:
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC1",
            "streamSid": SID,
            "callSid": "CA1",
            "tracks": ["inbound"],
            "customParameters": {"call_id": "call_x"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": SID,
    }
    parsed = parse_start(parse_message(json.dumps(start)))
    assert (parsed.stream_id, parsed.carrier_call_id, dict(parsed.parameters)) == (
        SID,
        "CA1",
        {"call_id": "call_x"},
    )
    start["start"]["mediaFormat"]["sampleRate"] = 16000  # type: ignore[index]
    with pytest.raises(MediaMalformed, match="media format"):
        parse_start(start)
    with pytest.raises(MediaMalformed, match="start"):
        parse_start({"event": "media"})


def test_a_number_with_no_agent_is_told_so_in_its_country_s_language_by_a_voice_that_speaks_it() -> (
    None
):
    """Twilio's default voice speaks only a few languages: others name a voice of the locale."""
    import xml.etree.ElementTree as ET

    from carriers.twilio.webhook import twiml_apology

    say = ET.fromstring(twiml_apology("Helaas, dit nummer is niet in gebruik.", "nl-NL")).find(
        "Say"
    )
    assert say is not None and say.get("language") == "nl-NL"
    assert say.get("voice") == "Google.nl-NL-Standard-A"
    english = ET.fromstring(twiml_apology("Sorry.")).find("Say")
    assert english is not None and english.get("voice") is None  # Twilio's default voice
