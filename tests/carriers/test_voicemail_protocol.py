"""Answering-machine detection and keypad input in each carrier's documented shapes.

Dial parameters go through each carrier's REST fake (which asserts the documented fields);
detection webhooks are parsed from the carriers' payloads; keys pressed in each simulator's
wire form come out of that carrier's media codec as pipecat DTMF frames.
"""

from __future__ import annotations

import json

import pytest
from pipecat.frames.frames import InputDTMFFrame

from carriers.base import AnsweredBy, Detection
from carriers.errors import WebhookMalformed
from carriers.sinch import webhook as sinch
from carriers.sinch.control import SinchAccount, SinchControl
from carriers.sinch.media import SinchMediaCodec
from carriers.sinch.simulator import SinchWire
from carriers.telnyx import webhook as telnyx
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from carriers.telnyx.media import TelnyxMediaCodec
from carriers.telnyx.simulator import TelnyxWire
from carriers.twilio import webhook as twilio
from carriers.twilio.control import TwilioAccount, TwilioControl
from carriers.twilio.media import TwilioMediaCodec
from carriers.twilio.simulator import TwilioWire
from tests.fakes.carrier_apis import FakeSinch, FakeTelnyx, FakeTwilio
from voice.voicemail import action_for

SID, TOKEN = "AC" + "a" * 32, "token"
ANSWER = "https://voice.example.com/webhooks/twilio/outbound?call_id=call_1"
STATUS = "https://voice.example.com/webhooks/twilio/status"
AMD_URL = "https://voice.example.com/webhooks/twilio/amd"


@pytest.mark.parametrize(
    ("detection", "mode"),
    [(Detection.DETECT, "Enable"), (Detection.MESSAGE_END, "DetectMessageEnd")],
)
async def test_twilio_dial_asks_asynchronous_amd(detection: Detection, mode: str) -> None:
    fake = FakeTwilio(SID, TOKEN)
    t = TwilioControl(TwilioAccount(SID, TOKEN), transport=fake.transport())
    await t.place_call("+15555550100", "+15555550199", ANSWER, STATUS, 930)
    await t.place_call(
        "+15555550100", "+15555550199", ANSWER, STATUS, 930, detection=detection, amd_url=AMD_URL
    )
    plain, detected = fake.dials
    assert not any(k.startswith(("MachineDetection", "AsyncAmd")) for k in plain)
    assert detected["MachineDetection"] == [mode] and detected["AsyncAmd"] == ["true"]
    assert detected["AsyncAmdStatusCallback"] == [AMD_URL]


@pytest.mark.parametrize(
    ("answered_by", "who", "ended"),
    [
        ("human", AnsweredBy.HUMAN, False),
        ("machine_start", AnsweredBy.MACHINE, False),
        ("machine_end_beep", AnsweredBy.MACHINE, True),
        ("machine_end_silence", AnsweredBy.MACHINE, True),
        ("machine_end_other", AnsweredBy.MACHINE, True),
        ("fax", AnsweredBy.MACHINE, False),
        ("unknown", AnsweredBy.UNKNOWN, False),
    ],
)
def test_twilio_answered_by_values(answered_by: str, who: AnsweredBy, ended: bool) -> None:
    params = {"CallSid": "CA" + "1" * 32, "AccountSid": SID, "AnsweredBy": answered_by}
    got = twilio.parse_amd(params | {"MachineDetectionDuration": "2140"})
    assert (got.answered_by, got.greeting_ended, got.final) == (who, ended, True)
    assert got.carrier_call_id == "CA" + "1" * 32 and got.result == answered_by


@pytest.mark.parametrize(
    ("action", "result", "done"),
    [
        ("leave_message", "fax", "hang_up"),
        ("hang_up", "fax", "hang_up"),
        ("leave_message", "machine_end_beep", "leave_message"),
        ("leave_message", "machine_start", "leave_message"),
    ],
)
def test_a_fax_is_hung_up_whatever_the_calls_choice(action: str, result: str, done: str) -> None:
    # No message can be left on a fax: the agent would speak into it after the wait.
    detection = twilio.parse_amd({"CallSid": "CA" + "1" * 32, "AnsweredBy": result})
    assert action_for(action, detection.result) == done


@pytest.mark.parametrize("params", [{"CallSid": "CA1"}, {"CallSid": "CA1", "AnsweredBy": "robot"}])
def test_twilio_malformed_amd_callback(params: dict[str, str]) -> None:
    with pytest.raises(WebhookMalformed):
        twilio.parse_amd(params)


async def test_telnyx_dial_sets_answering_machine_detection() -> None:
    fake = FakeTelnyx("KEY123")
    t = TelnyxControl(TelnyxAccount("KEY123", "pub", "conn-1"), transport=fake.transport())
    for detection in (None, Detection.DETECT, Detection.MESSAGE_END):
        await t.place_call("+15555550100", "+15555550199", "wss://x/m", {}, detection=detection)
    dials = [body for _, name, body in fake.commands if name == "dial"]
    assert [d.get("answering_machine_detection") for d in dials] == [
        None,
        "detect",
        "detect_beep",
    ]


def telnyx_event(event_type: str, result: str | None) -> telnyx.Event:
    payload = {"call_control_id": "v3:abc", "connection_id": "c", "result": result}
    body = {
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            "occurred_at": "2026-11-30T01:00:00.000000Z",
            "payload": {k: v for k, v in payload.items() if v is not None},
        },
        "meta": {"attempt": 1, "delivered_to": "https://x/webhooks/telnyx"},
    }
    return telnyx.parse(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("event_type", "result", "who", "ended", "final"),
    [
        ("call.machine.detection.ended", "human", AnsweredBy.HUMAN, False, True),
        ("call.machine.detection.ended", "machine", AnsweredBy.MACHINE, False, False),
        ("call.machine.detection.ended", "not_sure", AnsweredBy.UNKNOWN, False, True),
        ("call.machine.greeting.ended", "beep_detected", AnsweredBy.MACHINE, True, True),
        ("call.machine.greeting.ended", "ended", AnsweredBy.MACHINE, True, True),
        ("call.machine.premium.detection.ended", "human_business", AnsweredBy.HUMAN, False, True),
        ("call.machine.premium.detection.ended", "fax_detected", AnsweredBy.MACHINE, False, True),
        ("call.machine.premium.detection.ended", "silence", AnsweredBy.UNKNOWN, False, True),
        ("call.machine.premium.greeting.ended", "no_beep_detected", AnsweredBy.MACHINE, True, True),
    ],
)
def test_telnyx_machine_events(
    event_type: str, result: str, who: AnsweredBy, ended: bool, final: bool
) -> None:
    event = telnyx_event(event_type, result)
    got = telnyx.machine_detection(event)
    assert got is not None and got.carrier_call_id == "v3:abc" and got.result == result
    assert (got.answered_by, got.greeting_ended, got.final) == (who, ended, final)
    assert telnyx.status(event) is None  # no call state change


def test_telnyx_other_events_are_not_detections_and_a_result_is_required() -> None:
    assert telnyx.machine_detection(telnyx_event("call.answered", None)) is None
    with pytest.raises(WebhookMalformed):
        telnyx.machine_detection(telnyx_event("call.machine.detection.ended", None))


async def test_sinch_callout_turns_amd_on_in_its_ice() -> None:
    fake = FakeSinch("app", "c2VjcmV0", "proj", "kid", "ksecret")
    account = SinchAccount("app", "c2VjcmV0", "proj", "kid", "ksecret")
    s = SinchControl(account, transport=fake.transport())
    await s.place_call("+33100000000", "+33612345678", "wss://x/media/sinch", {"call_id": "c"})
    await s.place_call(
        "+33100000000", "+33612345678", "wss://x/media/sinch", {"call_id": "c"}, 930, amd=True
    )
    plain, detected = (json.loads(c["customCallout"]["ice"])["action"] for c in fake.callouts)
    assert "amd" not in plain
    assert detected["amd"] == {"enabled": True, "async": False}


def sinch_cb(event: str, **fields: object) -> sinch.Callback:
    body = {"event": event, "callid": "out-1", "version": 1, **fields}
    return sinch.parse(json.dumps(body).encode())


def test_sinch_ace_and_notify_amd() -> None:
    ace = sinch.machine_detection(
        sinch_cb("ace", amd={"status": "machine", "reason": "longgreeting", "duration": 4})
    )
    assert ace is not None and ace.answered_by is AnsweredBy.MACHINE
    assert ace.final and not ace.greeting_ended  # synchronous: one result, no beep
    human = sinch.machine_detection(sinch_cb("ace", amd={"status": "human", "reason": "n/a"}))
    assert human is not None and human.answered_by is AnsweredBy.HUMAN
    unsure = sinch.machine_detection(sinch_cb("ace", amd={"status": "notsure"}))
    assert unsure is not None and unsure.answered_by is AnsweredBy.UNKNOWN
    assert sinch.machine_detection(sinch_cb("ace")) is None  # AMD not asked
    machine = sinch.machine_detection(
        sinch_cb("notify", type="amd", amd={"status": "machine", "reason": "greeting"})
    )
    assert machine is not None and not machine.final  # asynchronous: the beep may follow
    beep = sinch.machine_detection(
        sinch_cb("notify", type="amd_beep", amd={"status": "machine", "reason": "beep"})
    )
    assert beep is not None and beep.greeting_ended and beep.final
    assert sinch.machine_detection(sinch_cb("notify", type="recording_finished")) is None
    with pytest.raises(WebhookMalformed):
        sinch.machine_detection(sinch_cb("notify", type="amd"))


async def test_each_simulators_keys_reach_the_pipeline_as_dtmf_frames() -> None:
    invalid: list[str] = []
    twilio_codec = TwilioMediaCodec("MZ1", on_invalid=invalid.append)
    telnyx_codec = TelnyxMediaCodec("s1", on_invalid=invalid.append)
    sinch_codec = SinchMediaCodec(16000, on_invalid=invalid.append)
    pairs = [
        (TwilioWire("MZ1"), twilio_codec),
        (TelnyxWire("s1"), telnyx_codec),
        (SinchWire(), sinch_codec),
    ]
    for wire, codec in pairs:
        for key in "0123456789*#":
            frame = await codec.deserialize(wire.key(key))
            assert isinstance(frame, InputDTMFFrame), (type(wire).__name__, key, frame)
            assert frame.button.value == key
    assert invalid == []


@pytest.mark.parametrize(
    "raw",
    [
        {"command": "dtmf"},
        {"command": "dtmf", "sequence": ""},
        {"command": "dtmf", "sequence": "12"},
        {"command": "dtmf", "sequence": "x"},
        {"command": "dtmf", "sequence": 5},
    ],
)
async def test_sinch_malformed_keypad_messages_are_dropped_and_reported(raw: object) -> None:
    invalid: list[str] = []
    codec = SinchMediaCodec(16000, on_invalid=invalid.append)
    assert await codec.deserialize(json.dumps(raw)) is None
    assert len(invalid) == 1 and "dtmf" in invalid[0].lower()
