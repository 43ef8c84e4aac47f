"""Sinch callbacks, SVAML and the stream codec."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, InterruptionFrame, OutputAudioRawFrame

from carriers.errors import MediaMalformed, WebhookMalformed
from carriers.sinch import webhook
from carriers.sinch.media import ANSWER, CLEAR, SinchMediaCodec, parse_connect

ICE = b'{"event":"ice","callid":"callId","timestamp":"2023-12-29T15:07:22Z","version":1,"cli":"1234567890","to":{"type":"did","endpoint":"+1234567770"},"domain":"pstn","applicationKey":"appKey","originationType":"PSTN"}'


def test_ice_from_the_documented_example() -> None:
    cb = webhook.parse(ICE)
    call = webhook.inbound(cb)
    assert (call.carrier, call.carrier_call_id, call.to_number, call.from_number, call.account_id) == (
        "sinch", "callId", "+1234567770", "+1234567890", "appKey",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"event":"party","callid":"x"}', "unknown"),
        (b'{"event":"ice"}', "callid"),
        (b'{"event":"ice","callid":"x","to":{}}', "endpoint"),
    ],
)
def test_malformed_callbacks(body: bytes, detail: str) -> None:
    with pytest.raises(WebhookMalformed, match=detail):
        webhook.inbound(webhook.parse(body))


def test_ace_and_dice_become_status_updates() -> None:
    ace = webhook.status(webhook.parse(b'{"event":"ace","callid":"c1","version":1}'))
    assert ace is not None and ace.status == "in-progress"
    dice = webhook.status(
        webhook.parse(
            b'{"event":"dice","callid":"c1","reason":"CALLERHANGUP","result":"ANSWERED","duration":42}'
        )
    )
    assert dice is not None and (dice.status, dice.duration_s) == ("completed", 42)
    timeout = webhook.status(webhook.parse(b'{"event":"dice","callid":"c1","reason":"TIMEOUT"}'))
    assert timeout is not None and timeout.status == "no-answer"
    assert webhook.status(webhook.parse(b'{"event":"notify","callid":"c1"}')) is None


def test_svaml_has_exactly_one_action() -> None:
    svaml = webhook.svaml_connect_stream(
        "wss://voice.example.eu/media/sinch", {"call_id": "call_1"}
    )
    assert svaml["action"] == {
        "name": "connectStream",
        "destination": {"type": "Websocket", "endpoint": "wss://voice.example.eu/media/sinch"},
        "streamingOptions": {"version": 1, "sampleRate": 16000},
        "maxDuration": 3600,
        "callHeaders": [{"key": "call_id", "value": "call_1"}],
    }
    bye = webhook.svaml_say_and_hang_up("Sorry.")
    assert bye["action"] == {"name": "hangup"} and bye["instructions"][0]["name"] == "say"


def test_connect_message() -> None:
    start, rate = parse_connect(
        json.dumps(
            {
                "command": "connect",
                "version": 1,
                "callId": "c1",
                "applicationKey": "k",
                "codec": "PCM",
                "sampleRate": 16000,
                "callHeaders": {"call_id": "call_1"},
            }
        )
    )
    assert (start.carrier_call_id, dict(start.parameters), rate) == (
        "c1",
        {"call_id": "call_1"},
        16000,
    )
    start, _ = parse_connect(
        json.dumps(
            {
                "command": "connect",
                "callId": "c1",
                "sampleRate": 8000,
                "callHeaders": [{"key": "call_id", "value": "x"}],
            }
        )
    )
    assert start.parameters["call_id"] == "x"
    assert json.loads(ANSWER) == {"command": "answer"}
    for bad in (
        b"\x00\x00",
        "{",
        json.dumps({"command": "answer"}),
        json.dumps({"command": "connect", "callId": "c", "sampleRate": 44100}),
    ):
        with pytest.raises(MediaMalformed):
            parse_connect(bad)


async def test_codec_pcm_both_ways_and_clear() -> None:
    rejected: list[str] = []
    codec = SinchMediaCodec(16000, on_invalid=rejected.append)
    await codec.setup(SimpleNamespace(audio_in_sample_rate=16000))  # type: ignore[arg-type]
    tone = (np.sin(np.arange(320) / 5) * 8000).astype("<i2").tobytes()  # 20 ms at 16 kHz
    frame = await codec.deserialize(tone)
    assert isinstance(frame, InputAudioRawFrame) and frame.audio == tone  # same rate: untouched
    outs = [
        await codec.serialize(OutputAudioRawFrame(b"\x01\x00" * 160, 8000, 1)) for _ in range(25)
    ]
    sent = [o for o in outs if o is not None]  # 0.5 s of 8 kHz agent audio, resampled to 16 kHz
    assert all(isinstance(o, bytes) and len(o) % 2 == 0 for o in sent)
    assert 0.4 * 16000 * 2 < sum(len(o) for o in sent) <= 0.5 * 16000 * 2  # type: ignore[arg-type]
    assert await codec.serialize(InterruptionFrame()) == CLEAR
    assert await codec.deserialize(b"\x00\x01\x02") is None and "16-bit" in rejected[-1]
    assert await codec.deserialize("{bad") is None and "JSON" in rejected[-1]
