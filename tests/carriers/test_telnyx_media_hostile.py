"""The Telnyx media codec drops hostile messages (reported as rejected) and keeps the call."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import InputAudioRawFrame

from carriers.errors import MediaMalformed
from carriers.telnyx.media import TelnyxMediaCodec, parse_message, parse_start

PAYLOAD = base64.b64encode(b"\xff" * 160).decode()


def media_raw(chunk: str) -> str:
    """A media message whose ``chunk`` is the JSON text ``chunk``, as sent on the wire."""
    return (
        '{"event":"media","stream_id":"s1","media":{"track":"inbound","chunk":' + chunk
        + f',"timestamp":"5","payload":"{PAYLOAD}"}}}}'
    )  # fmt: skip


@pytest.mark.parametrize(
    "chunk", ["1e999", "-1e999", "NaN", "Infinity", "2.5", "true", "[1]", '{"a":1}', '"x"', "-3"]
)
async def test_a_hostile_chunk_is_dropped_and_the_stream_goes_on(chunk: str) -> None:
    rejected: list[str] = []
    codec = TelnyxMediaCodec("s1", on_invalid=rejected.append)
    await codec.setup(SimpleNamespace(audio_in_sample_rate=8000))  # type: ignore[arg-type]
    assert await codec.deserialize(media_raw(chunk)) is None
    assert rejected and "chunk" in rejected[-1]
    frame = await codec.deserialize(media_raw('"1"'))
    assert isinstance(frame, InputAudioRawFrame)  # the next good message plays


async def test_other_hostile_messages_are_dropped() -> None:
    rejected: list[str] = []
    codec = TelnyxMediaCodec("s1", on_invalid=rejected.append)
    await codec.setup(SimpleNamespace(audio_in_sample_rate=8000))  # type: ignore[arg-type]
    hostile = [
        "[" * 100_000 + "]" * 100_000,  # nesting deeper than the parser's stack
        '{"event":"dtmf","dtmf":["1"]}',
        '{"event":"dtmf","dtmf":"1"}',
        '{"event":"media","media":[]}',
    ]
    for raw in hostile:
        assert await codec.deserialize(raw) is None
    assert len(rejected) == len(hostile)


@pytest.mark.parametrize(
    "media_format",
    ['{"encoding":"PCMU","sample_rate":1e999}', '{"encoding":"PCMU","sample_rate":"x"}',
     '{"encoding":"PCMU","sample_rate":[8000]}', '"PCMU"', "[1]"],
)  # fmt: skip
def test_a_hostile_start_is_malformed_not_a_crash(media_format: str) -> None:
    raw = (
        '{"event":"start","stream_id":"s1","start":{"call_control_id":"v3:abc",'
        f'"media_format":{media_format}}}}}'
    )
    with pytest.raises(MediaMalformed):
        parse_start(parse_message(raw))


def test_a_start_with_a_non_string_client_state_is_malformed() -> None:
    raw = json.dumps(
        {"event": "start", "stream_id": "s1",
         "start": {"call_control_id": "v3:abc", "client_state": 12}}
    )  # fmt: skip
    with pytest.raises(MediaMalformed):
        parse_start(parse_message(raw))
