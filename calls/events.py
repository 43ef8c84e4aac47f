"""Call lifecycle: the event types, a frozen event record, and their expected order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: The call a coroutine works for; every log line written inside a call carries it.
current_call_id: ContextVar[str | None] = ContextVar("current_call_id", default=None)


class CallEventType(StrEnum):
    """What can happen to a call, in the order a normal call meets them."""

    INBOUND = "inbound"  # carrier webhook accepted, agent found
    OUTBOUND = "outbound"  # an outbound call was asked of the carrier
    REJECTED = "rejected"  # no agent for the number: apology and hang-up
    STATUS = "status"  # carrier status callback
    MEDIA_CONNECTED = "media_connected"  # media WebSocket started
    ANNOUNCEMENT_STARTED = "announcement_started"
    ANNOUNCEMENT_PLAYED = "announcement_played"  # last announcement audio left the transport
    RECORDING_STARTED = "recording_started"  # the consent gate opened the recorder
    LANGUAGE_DETECTED = "language_detected"  # an auto call's language, fixed (probability)
    CALLER_TURN = "caller_turn"  # the caller said something (its length; words: transcript)
    AGENT_TURN = "agent_turn"  # the agent answered (its length; words: transcript)
    RECORDING_OBJECTED = "recording_objected"  # caller objected: recording stopped, deleted
    BARGE_IN = "barge_in"  # caller spoke over the agent: playback cleared
    MEDIA_REJECTED = "media_rejected"  # a malformed media message was dropped
    TRANSFER_REQUESTED = "transfer_requested"  # by: tool, phrase, dtmf or api
    TRANSFER_REFUSED = "transfer_refused"  # routing, limits or the carrier said no (code)
    TRANSFERRED = "transferred"  # handed to a person (destination masked, mode)
    TRANSFER_FAILED = "transfer_failed"  # the carrier's leg to the person failed (cause)
    TOOL_CALLED = "tool_called"  # an HTTP tool ran (name, duration_s, status; no content)
    DIGITS = "digits"  # the caller typed digits (their count only)
    VOICEMAIL = "voicemail"  # answering-machine detection (answered_by, action)
    HANGUP_REQUESTED = "hangup_requested"  # the agent ends the call
    ERROR = "error"  # a model, carrier or store failed; the call ends politely
    NODE_LOST = "node_lost"  # the process holding the call died: a survivor ended it
    MEDIA_CLOSED = "media_closed"  # media WebSocket closed
    ENDED = "ended"  # carrier says the call is over


#: Stages that must appear in this relative order when present (events not listed may
#: come at any point: status callbacks, barge-ins and errors arrive whenever they do).
STAGE_ORDER: tuple[CallEventType, ...] = (
    CallEventType.INBOUND,
    CallEventType.OUTBOUND,
    CallEventType.MEDIA_CONNECTED,
    CallEventType.ANNOUNCEMENT_STARTED,
    CallEventType.ANNOUNCEMENT_PLAYED,
    CallEventType.RECORDING_STARTED,
    CallEventType.MEDIA_CLOSED,
)
_CONVERSATION = {CallEventType.CALLER_TURN, CallEventType.AGENT_TURN}


@dataclass(frozen=True)
class CallEvent:
    """One thing that happened to one call, at a wall-clock time (unix seconds)."""

    type: CallEventType
    call_id: str
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, CallEventType):
            object.__setattr__(self, "type", CallEventType(self.type))
        if not self.call_id:
            raise ValueError("a call event needs a call id")
        if self.at <= 0:
            raise ValueError("a call event needs a positive timestamp")

    def to_json(self) -> str:
        """Serialise for storage."""
        return json.dumps(
            {
                "type": str(self.type),
                "call_id": self.call_id,
                "at": self.at,
                "data": dict(self.data),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CallEvent:
        """Parse what :meth:`to_json` wrote."""
        d = json.loads(raw)
        return cls(CallEventType(d["type"]), d["call_id"], float(d["at"]), d.get("data", {}))


def order_violations(events: Iterable[CallEvent]) -> list[str]:
    """Describe every place where ``events`` break :data:`STAGE_ORDER`; empty when in order.

    Conversation turns must fall after the announcement has played and before the media
    closed.
    """
    rank = {t: i for i, t in enumerate(STAGE_ORDER)}
    problems: list[str] = []
    highest = -1
    seen: set[CallEventType] = set()
    for ev in events:
        if ev.type in rank:
            if rank[ev.type] < highest:
                problems.append(f"{ev.type} after {STAGE_ORDER[highest]}")
            highest = max(highest, rank[ev.type])
            seen.add(ev.type)
        elif ev.type in _CONVERSATION:
            if CallEventType.ANNOUNCEMENT_PLAYED not in seen:
                problems.append(f"{ev.type} before the announcement played")
            if CallEventType.MEDIA_CLOSED in seen:
                problems.append(f"{ev.type} after the media closed")
    return problems
