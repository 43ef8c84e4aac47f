"""Twilio voice webhooks: parse the form, answer with TwiML. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from carriers.base import AnsweredBy, InboundCall, MachineDetection, StatusUpdate
from carriers.errors import WebhookMalformed

CARRIER = "twilio"
#: CallStatus values Twilio documents.
CALL_STATUSES = frozenset(
    {"queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"}
)
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise WebhookMalformed(f"Twilio webhook without {name}")
    return value


def parse_voice(params: Mapping[str, str]) -> InboundCall:
    """An inbound call from the voice webhook's form parameters."""
    call_sid = _required(params, "CallSid")
    if not call_sid.startswith("CA"):
        raise WebhookMalformed(f"CallSid {call_sid!r} is not a Twilio call SID")
    status = params.get("CallStatus", "ringing")
    if status not in CALL_STATUSES:
        raise WebhookMalformed(f"unknown CallStatus {status!r}")
    return InboundCall(
        carrier=CARRIER,
        carrier_call_id=call_sid,
        account_id=_required(params, "AccountSid"),
        # Withheld caller ID arrives as a string containing "anonymous" or "unknown".
        from_number=params.get("From", "") or "anonymous",
        to_number=_required(params, "To"),
        status=status,
    )


def parse_status(params: Mapping[str, str]) -> StatusUpdate:
    """A call status callback (CallStatus, SequenceNumber, CallDuration)."""
    call_sid = _required(params, "CallSid")
    status = _required(params, "CallStatus")
    if status not in CALL_STATUSES:
        raise WebhookMalformed(f"unknown CallStatus {status!r}")

    def _int(name: str) -> int | None:
        raw = params.get(name)
        if raw in (None, ""):
            return None
        try:
            return int(raw)
        except ValueError as e:
            raise WebhookMalformed(f"{name} must be an integer, got {raw!r}") from e

    return StatusUpdate(call_sid, status, _int("SequenceNumber"), _int("CallDuration"))


#: ``AnsweredBy`` values of Twilio's AMD callback: who, and whether the greeting has ended.
ANSWERED_BY: dict[str, tuple[AnsweredBy, bool]] = {
    "human": (AnsweredBy.HUMAN, False),
    "machine_start": (AnsweredBy.MACHINE, False),
    "machine_end_beep": (AnsweredBy.MACHINE, True),
    "machine_end_silence": (AnsweredBy.MACHINE, True),
    "machine_end_other": (AnsweredBy.MACHINE, True),
    "fax": (AnsweredBy.MACHINE, False),
    "unknown": (AnsweredBy.UNKNOWN, False),
}


def parse_amd(params: Mapping[str, str]) -> MachineDetection:
    """The asynchronous AMD callback (``CallSid``, ``AnsweredBy``).

    With ``MachineDetection=Enable`` Twilio posts ``human``, ``machine_start``, ``fax`` or
    ``unknown``; with ``DetectMessageEnd``, ``machine_end_beep``/``_silence``/``_other`` once
    a machine's greeting is over. Twilio posts once per call: every result is final.
    """
    call_sid = _required(params, "CallSid")
    answered = _required(params, "AnsweredBy")
    if answered not in ANSWERED_BY:
        raise WebhookMalformed(f"unknown AnsweredBy {answered!r}")
    who, ended = ANSWERED_BY[answered]
    return MachineDetection(call_sid, who, answered, greeting_ended=ended, final=True)


def twiml_stream(stream_url: str, parameters: Mapping[str, str], status_url: str) -> str:
    """Answer: connect the call's audio to our media WebSocket, both ways.

    ``<Connect><Stream>`` URLs take no query string, so call ids travel as ``<Parameter>``s
    (they arrive in ``start.customParameters``). When our side closes the socket the TwiML
    after ``</Connect>`` runs: none, so the call ends.
    """
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(stream_url)} statusCallback={quoteattr(status_url)}>{params}"
        "</Stream></Connect></Response>"
    )


def twiml_apology(text: str, language: str = "en-US") -> str:
    """A short spoken apology, then hang up (a number with no agent).

    Twilio's default voice speaks only a few languages (an unsupported pair may fail the
    ``<Say>``): other languages get Google's standard voice of their locale, which Twilio offers.
    """
    voice = "" if language == "en-US" else f" voice={quoteattr(f'Google.{language}-Standard-A')}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"<Say language={quoteattr(language)}{voice}>{escape(text)}</Say><Hangup/></Response>"
    )


def twiml_busy() -> str:
    """Refuse the call unanswered with a busy signal (``<Reject reason="busy"/>``).

    As the first verb, ``<Reject>`` keeps Twilio from answering (nothing is billed); the call
    ends with status ``busy`` (twilio.com/docs/voice/twiml/reject).
    """
    return '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'
