"""Telnyx Call Control webhooks: the event envelope, parsed into the platform's call events. Pure.

Delivery is unordered, may repeat and may be concurrent: each event carries its own id (the
dedupe key) and maps onto a call state that only moves forward, so the final state does not
depend on the order of arrival.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carriers.base import (
    AnsweredBy,
    Detection,
    InboundCall,
    MachineDetection,
    StatusUpdate,
)
from carriers.errors import WebhookMalformed

CARRIER = "telnyx"
#: Call states our events map to (``None``: no state change).
EVENT_STATUS: dict[str, str | None] = {
    "call.initiated": "ringing",
    "call.answered": "in-progress",
    "call.hangup": "completed",
    "call.dtmf.received": None,
    "streaming.started": None,
    "streaming.stopped": None,
    "streaming.failed": None,
    "call.bridged": None,
    "call.playback.started": None,
    "call.playback.ended": None,
    "call.speak.started": None,
    "call.speak.ended": None,
    "call.machine.detection.ended": None,
    "call.machine.greeting.ended": None,
    "call.machine.premium.detection.ended": None,
    "call.machine.premium.greeting.ended": None,
}
HANGUP_STATUS = {
    "normal_clearing": "completed",
    "originator_cancel": "canceled",
    "timeout": "no-answer",
    "user_busy": "busy",
    "call_rejected": "failed",
    "unspecified": "completed",
}


@dataclass(frozen=True)
class Event:
    """One webhook: its id (for dedupe), type, call control id and payload."""

    id: str
    type: str
    call_control_id: str
    occurred_at: str
    payload: Mapping[str, Any]

    @property
    def client_state(self) -> dict[str, str]:
        """Our ``client_state`` echoed back (base64 JSON), or empty."""
        raw = self.payload.get("client_state")
        if not raw:
            return {}
        try:
            value = json.loads(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError):
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def parse(body: bytes) -> Event:
    """Decode the ``{"data": {...}, "meta": {...}}`` envelope."""
    try:
        envelope = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WebhookMalformed("Telnyx webhook is not JSON") from e
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict) or data.get("record_type") != "event":
        raise WebhookMalformed("Telnyx webhook without an event in data")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise WebhookMalformed("Telnyx event without payload")
    event_id, event_type = data.get("id"), data.get("event_type")
    ccid = payload.get("call_control_id")
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise WebhookMalformed("Telnyx event without id or event_type")
    if not isinstance(ccid, str) or not ccid:
        raise WebhookMalformed("Telnyx event without call_control_id")
    return Event(event_id, event_type, ccid, str(data.get("occurred_at", "")), payload)


def encode_client_state(state: Mapping[str, str]) -> str:
    """``client_state`` must be base64: our call ids travel in it."""
    return base64.b64encode(json.dumps(dict(state), separators=(",", ":")).encode()).decode()


def inbound(event: Event) -> InboundCall:
    """A ``call.initiated`` of an incoming call."""
    if event.type != "call.initiated" or event.payload.get("direction") != "incoming":
        raise WebhookMalformed("not an incoming call.initiated")
    to = event.payload.get("to")
    if not isinstance(to, str) or not to:
        raise WebhookMalformed("call.initiated without to")
    return InboundCall(
        CARRIER,
        event.call_control_id,
        str(event.payload.get("connection_id", "")),
        str(event.payload.get("from") or "anonymous"),
        to,
        "ringing",
    )


def status(event: Event) -> StatusUpdate | None:
    """The call state an event implies, if any."""
    if event.type == "call.hangup":
        cause = str(event.payload.get("hangup_cause", "normal_clearing"))
        return StatusUpdate(event.call_control_id, HANGUP_STATUS.get(cause, "completed"))
    state = EVENT_STATUS.get(event.type)
    return StatusUpdate(event.call_control_id, state) if state else None


#: ``cause`` of ``actions/reject`` for a call refused because we are at capacity.
REJECT_BUSY = "USER_BUSY"


def reject_command(cause: str = REJECT_BUSY) -> dict[str, str]:
    """The body of ``actions/reject``: refuse a parked incoming call unanswered.

    Telnyx documents ``cause`` ``CALL_REJECTED`` or ``USER_BUSY`` and sends ``call.hangup``
    after it (developers.telnyx.com, Call Commands: Reject a call).
    """
    return {"cause": cause}


# Answering-machine detection (developers.telnyx.com, Voice API: Answering Machine Detection).
# ``detect`` sends ``call.machine.detection.ended`` (result human | machine | not_sure);
# ``detect_beep`` also ``call.machine.greeting.ended`` (ended | beep_detected | not_sure), only
# when a beep is heard. Premium AMD sends ``call.machine.premium.detection.ended``
# (human_residence | human_business | machine | silence | fax_detected | not_sure) and
# ``call.machine.premium.greeting.ended`` (beep_detected | no_beep_detected | prompt_ended).
_DETECTION_RESULT: dict[str, tuple[AnsweredBy, bool]] = {
    # result -> (who, final)
    "human": (AnsweredBy.HUMAN, True),
    "human_residence": (AnsweredBy.HUMAN, True),
    "human_business": (AnsweredBy.HUMAN, True),
    "machine": (AnsweredBy.MACHINE, False),
    "fax_detected": (AnsweredBy.MACHINE, True),
    "silence": (AnsweredBy.UNKNOWN, True),
    "not_sure": (AnsweredBy.UNKNOWN, True),
}
DETECTION_EVENTS = frozenset(
    {"call.machine.detection.ended", "call.machine.premium.detection.ended"}
)
GREETING_EVENTS = frozenset({"call.machine.greeting.ended", "call.machine.premium.greeting.ended"})


def amd_setting(detection: Detection) -> str:
    """The Dial command's ``answering_machine_detection``: ``detect`` or ``detect_beep``."""
    return "detect_beep" if detection is Detection.MESSAGE_END else "detect"


def machine_detection(event: Event) -> MachineDetection | None:
    """An AMD event as a detection result; ``None`` for any other event.

    A machine's ``detection.ended`` is not final when a greeting event may follow; every
    ``greeting.ended`` result means the greeting is over (a beep, silence, or the detector
    giving up), so a message may be left.
    """
    if event.type not in DETECTION_EVENTS | GREETING_EVENTS:
        return None
    result = event.payload.get("result")
    if not isinstance(result, str) or not result:
        raise WebhookMalformed(f"{event.type} without result")
    if event.type in GREETING_EVENTS:
        return MachineDetection(
            event.call_control_id, AnsweredBy.MACHINE, result, greeting_ended=True, final=True
        )
    who, final = _DETECTION_RESULT.get(result, (AnsweredBy.UNKNOWN, True))
    return MachineDetection(event.call_control_id, who, result, greeting_ended=False, final=final)
