"""Telnyx: Ed25519 webhook signatures with a replay window, the event envelope, the media codec."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, InterruptionFrame

from carriers.errors import MediaMalformed, WebhookMalformed
from carriers.telnyx import webhook
from carriers.telnyx.media import ChunkReorderer, TelnyxMediaCodec, parse_message, parse_start
from carriers.telnyx.signature import load_public_key, verify

FIXTURE = (Path(__file__).parents[1] / "fixtures" / "telnyx" / "call_initiated.json").read_bytes()
NOW = 1_800_000_000
# Telnyx publishes no vector: a key pair made here plays the account's (shared/docs/carriers.md).
PRIVATE = Ed25519PrivateKey.generate()
PUBLIC_B64 = base64.b64encode(
    PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()


def signed(body: bytes, ts: int = NOW, key: Ed25519PrivateKey = PRIVATE) -> dict[str, str]:
    sig = key.sign(f"{ts}|".encode() + body)
    return {"telnyx-signature-ed25519": base64.b64encode(sig).decode(), "telnyx-timestamp": str(ts)}


def test_a_signed_webhook_verifies() -> None:
    assert verify(FIXTURE, signed(FIXTURE), load_public_key(PUBLIC_B64), NOW + 10)


@pytest.mark.parametrize(
    ("headers", "body", "now", "reason"),
    [
        (signed(FIXTURE), FIXTURE.replace(b"+15555550100", b"+15555550199"), NOW, "does not match"),
        (signed(FIXTURE, key=Ed25519PrivateKey.generate()), FIXTURE, NOW, "does not match"),
        ({**signed(FIXTURE), "telnyx-timestamp": str(NOW + 1)}, FIXTURE, NOW, "does not match"),
        (signed(FIXTURE), FIXTURE, NOW + 301, "stale"),
        (signed(FIXTURE), FIXTURE, NOW - 301, "stale"),
        ({"telnyx-timestamp": str(NOW)}, FIXTURE, NOW, "missing"),
        ({**signed(FIXTURE), "telnyx-timestamp": "soon"}, FIXTURE, NOW, "unix seconds"),
        ({**signed(FIXTURE), "telnyx-signature-ed25519": "***"}, FIXTURE, NOW, "base64"),
    ],
    ids=[
        "tampered",
        "other-key",
        "other-timestamp",
        "stale",
        "future",
        "missing",
        "bad-ts",
        "bad-b64",
    ],
)
def test_forged_tampered_and_stale_webhooks_are_refused(headers, body, now, reason) -> None:  # type: ignore[no-untyped-def]
    verdict = verify(body, headers, load_public_key(PUBLIC_B64), now)
    assert not verdict and reason in verdict.reason


def test_bad_public_key() -> None:
    with pytest.raises(ValueError):
        load_public_key(base64.b64encode(b"short").decode())


def test_call_initiated_fixture() -> None:
    event = webhook.parse(FIXTURE)
    call = webhook.inbound(event)
    assert (call.carrier, call.to_number, call.from_number) == (
        "telnyx",
        "+15555550100",
        "+15555550123",
    )
    assert call.carrier_call_id.startswith("v3:") and event.client_state == {}
    assert webhook.status(event).status == "ringing"  # type: ignore[union-attr]


def test_events_map_to_forward_only_states() -> None:
    def ev(kind: str, **payload: str) -> webhook.Event:
        body = {
            "data": {
                "record_type": "event",
                "event_type": kind,
                "id": kind,
                "payload": {"call_control_id": "c", **payload},
            }
        }
        return webhook.parse(json.dumps(body).encode())

    assert webhook.status(ev("call.answered")).status == "in-progress"  # type: ignore[union-attr]
    assert webhook.status(ev("call.hangup", hangup_cause="user_busy")).status == "busy"  # type: ignore[union-attr]
    assert webhook.status(ev("call.hangup", hangup_cause="normal_clearing")).status == "completed"  # type: ignore[union-attr]
    assert webhook.status(ev("streaming.started")) is None
    state = webhook.encode_client_state({"call_id": "call_1"})
    assert ev("call.answered", client_state=state).client_state == {"call_id": "call_1"}


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"data":{"record_type":"call"}}',
        b'{"data":{"record_type":"event","id":"1","event_type":"call.answered","payload":{}}}',
    ],
)
def test_malformed_webhooks(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        webhook.parse(body)


def test_reorderer_plays_chunks_in_order_and_skips_lost_ones() -> None:
    r = ChunkReorderer(depth=3)
    assert r.push(1, b"a") == b"a"
    assert r.push(3, b"c") == b""  # 2 is late: hold 3
    assert r.push(2, b"b") == b"bc"
    assert r.push(2, b"b") == b"" and r.dropped == 1  # duplicate
    assert r.push(5, b"e") == b"" and r.push(6, b"f") == b"" and r.push(7, b"g") == b""
    assert r.push(8, b"h") == b"efgh"  # 4 never came: given up after 3 held
    assert r.push(4, b"d") == b""  # too late now


def start_msg(encoding: str = "PCMU", state: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_id": "s1",
            "start": {
                "call_control_id": "v3:abc",
                "client_state": webhook.encode_client_state(state or {"call_id": "call_1"}),
                "media_format": {"encoding": encoding, "sample_rate": 8000, "channels": 1},
            },
        }
    )


@pytest.mark.parametrize("encoding", ["PCMU", "audio/x-mulaw"])
def test_start_accepts_both_encoding_names(encoding: str) -> None:
    start = parse_start(parse_message(start_msg(encoding)))
    assert (start.stream_id, start.carrier_call_id, dict(start.parameters)) == (
        "s1",
        "v3:abc",
        {"call_id": "call_1"},
    )


def test_start_refuses_other_formats() -> None:
    with pytest.raises(MediaMalformed, match="format"):
        parse_start(parse_message(start_msg("L16")))
    with pytest.raises(MediaMalformed):
        parse_message('{"event":"dance"}')


def media(chunk: int, payload: bytes = b"\xff" * 160, stream: str = "s1") -> str:
    return json.dumps(
        {
            "event": "media",
            "stream_id": stream,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


async def test_codec_reorders_and_reports() -> None:
    rejected: list[str] = []
    codec = TelnyxMediaCodec("s1", on_invalid=rejected.append)
    await codec.setup(SimpleNamespace(audio_in_sample_rate=16000))  # type: ignore[arg-type]
    frames = [await codec.deserialize(media(c)) for c in (1, 3, 2, 4, 5, 6, 7, 8, 9, 10)]
    audio = [f for f in frames if f is not None]
    assert all(isinstance(f, InputAudioRawFrame) and f.sample_rate == 16000 for f in audio)
    assert frames[1] is None  # chunk 3 waited for chunk 2
    assert (
        await codec.deserialize(media(11, stream="other")) is None
        and "unknown stream" in rejected[-1]
    )
    assert (
        await codec.deserialize(
            json.dumps({"event": "media", "stream_id": "s1", "media": {"payload": "@@"}})
        )
        is None
    )
    assert "base64" in rejected[-1]
    dtmf = await codec.deserialize(
        json.dumps({"event": "dtmf", "stream_id": "s1", "dtmf": {"digit": "9"}})
    )
    assert isinstance(dtmf, InputDTMFFrame)
    assert json.loads(await codec.serialize(InterruptionFrame())) == {"event": "clear"}  # type: ignore[arg-type]
