"""Sinch Voice API v1 callbacks (ICE, ACE, DiCE, PIE, notify) and SVAML answers. Pure.

ICE, ACE and PIE expect an SVAML body (one action, optional instructions); DiCE and notify
expect only a 200. Sinch waits 5 s for an answer, so nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carriers.base import AnsweredBy, InboundCall, MachineDetection, StatusUpdate
from carriers.errors import WebhookMalformed

CARRIER = "sinch"
#: The longest ``maxDuration`` of a ``connectStream`` Sinch accepts, in seconds.
MAX_DURATION_S = 14400
EVENTS = frozenset({"ice", "ace", "dice", "pie", "notify"})
#: DiCE reasons: how a call ended (Sinch v1 "reason" values, mapped onto our call states).
DICE_STATUS = {
    "CALLERHANGUP": "completed",
    "CALLEEHANGUP": "completed",
    "MANAGERHANGUP": "completed",
    "TIMEOUT": "no-answer",
    "NOCREDITPARTNER": "failed",
    "GENERALERROR": "failed",
    "CANCEL": "canceled",
    "CALLEEBUSY": "busy",
    "CALLEEUNREACHABLE": "failed",
    "CALLEENOANSWER": "no-answer",
    "BLOCKED": "failed",
    "OTHERPEERANSWERED": "canceled",
}


@dataclass(frozen=True)
class Callback:
    """A parsed callback: its event type, call id and raw fields."""

    event: str
    call_id: str
    data: Mapping[str, Any]


def parse(body: bytes) -> Callback:
    """Decode a callback body; :class:`WebhookMalformed` when it is not one."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WebhookMalformed("Sinch callback is not JSON") from e
    if not isinstance(data, dict):
        raise WebhookMalformed("Sinch callback is not a JSON object")
    event = data.get("event")
    if event not in EVENTS:
        raise WebhookMalformed(f"unknown Sinch event {event!r}")
    call_id = data.get("callid") or data.get("callId")
    if not isinstance(call_id, str) or not call_id:
        raise WebhookMalformed("Sinch callback without callid")
    return Callback(str(event), call_id, data)


def inbound(cb: Callback) -> InboundCall:
    """An ICE as an inbound call."""
    if cb.event != "ice":
        raise WebhookMalformed(f"expected ice, got {cb.event}")
    to = cb.data.get("to") or {}
    endpoint = to.get("endpoint") if isinstance(to, dict) else None
    if not endpoint:
        raise WebhookMalformed("ice without to.endpoint")
    cli = str(cb.data.get("cli") or "anonymous")
    caller = cli if cli.startswith("+") or not cli.isdigit() else f"+{cli}"
    number = endpoint if str(endpoint).startswith("+") else f"+{endpoint}"
    return InboundCall(
        CARRIER, cb.call_id, str(cb.data.get("applicationKey", "")), caller, number, "ringing"
    )


def status(cb: Callback) -> StatusUpdate | None:
    """ACE (answered) and DiCE (disconnected) as status updates; others are not."""
    if cb.event == "ace":
        return StatusUpdate(cb.call_id, "in-progress")
    if cb.event == "dice":
        reason = str(cb.data.get("reason", "")).upper()
        duration = cb.data.get("duration")
        return StatusUpdate(
            cb.call_id,
            DICE_STATUS.get(reason, "completed"),
            duration_s=int(duration) if isinstance(duration, int | float) else None,
        )
    return None


def svaml_connect_stream(
    endpoint: str,
    headers: Mapping[str, str],
    sample_rate: int = 16000,
    max_seconds: int = 3600,
    *,
    amd: bool = False,
) -> dict[str, Any]:
    """Answer an ICE: stream the call's audio to our WebSocket (``connectStream``).

    ``maxDuration`` is the call's hard limit: Sinch disconnects it then (at most 14400 s).
    With ``amd`` the action carries ``"amd": {"enabled": true, "async": false}``: Sinch's
    AMD v2 is set up in the custom callout's ICE and reports synchronously in the ACE's
    ``amd`` object (developers.sinch.com/docs/voice/api-reference/amd_v2; the SDKs document
    the ``amd`` property on ``connectPstn``, the ICE action of a PSTN callout).
    """
    svaml: dict[str, Any] = {
        "instructions": [{"name": "answer"}],
        "action": {
            "name": "connectStream",
            "destination": {"type": "Websocket", "endpoint": endpoint},
            "streamingOptions": {"version": 1, "sampleRate": sample_rate},
            "maxDuration": min(max_seconds, MAX_DURATION_S),
            "callHeaders": [{"key": k, "value": v} for k, v in headers.items()],
        },
    }
    if amd:
        svaml["action"]["amd"] = {"enabled": True, "async": False}
    return svaml


#: AMD ``status`` values (ACE ``amd`` object, notify ``amd``): machine | human | notsure | hangup.
AMD_STATUS = {
    "human": AnsweredBy.HUMAN,
    "machine": AnsweredBy.MACHINE,
    "notsure": AnsweredBy.UNKNOWN,
    "hangup": AnsweredBy.UNKNOWN,
}


def machine_detection(cb: Callback) -> MachineDetection | None:
    """Sinch's AMD result: the ACE's ``amd`` object, or an asynchronous ``notify``.

    Synchronous AMD (``async: false``) puts ``{status, reason, duration}`` in the ACE; the
    asynchronous mode notifies ``type: amd`` then ``type: amd_beep`` (reason ``beep``) when a
    machine's greeting ends. ``None`` when the callback carries no AMD result.
    """
    amd = cb.data.get("amd")
    kind = cb.data.get("type") if cb.event == "notify" else None
    if cb.event not in ("ace", "notify") or not isinstance(amd, dict):
        if cb.event == "notify" and kind in ("amd", "amd_beep"):
            raise WebhookMalformed(f"notify {kind} without amd")
        return None
    if cb.event == "notify" and kind not in ("amd", "amd_beep"):
        return None
    status = str(amd.get("status", "")).lower()
    reason = str(amd.get("reason", "")).lower()
    who = AMD_STATUS.get(status, AnsweredBy.UNKNOWN)
    beep = kind == "amd_beep" or reason == "beep"
    if beep:
        who = AnsweredBy.MACHINE
    # Synchronous AMD reports once; an asynchronous machine result is followed by its beep.
    final = beep or who is not AnsweredBy.MACHINE or cb.event == "ace"
    return MachineDetection(
        cb.call_id, who, f"{status or 'beep'}/{reason or 'n/a'}", greeting_ended=beep, final=final
    )


def svaml_say_and_hang_up(text: str, locale: str = "en-US") -> dict[str, Any]:
    """A short spoken message, then hang up (a number with no agent)."""
    return {
        "instructions": [{"name": "say", "text": text, "locale": locale}],
        "action": {"name": "hangup"},
    }


def svaml_continue() -> dict[str, Any]:
    """Let the call go on as it is (answer to ACE and PIE)."""
    return {"action": {"name": "continue"}}


def svaml_busy() -> dict[str, Any]:
    """Refuse an ICE unanswered (``hangup`` with no ``answer`` instruction).

    Sinch v1's SVAML documents no busy cause: ``hangup`` as the ICE's action ends the call
    before it is answered; the caller's network plays its own tone.
    """
    return {"action": {"name": "hangup"}}
