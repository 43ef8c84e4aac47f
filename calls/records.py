"""What is stored of a call: its record, its turns, an outbound call's reservation, its ids."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from calls.state import CallState
from routing.directory import MAX_RETENTION_DAYS


def expiry(created_at: float, retention_days: int | None) -> float:
    """When a call and everything recorded of it must be gone (the agent's retention)."""
    return created_at + (retention_days or MAX_RETENTION_DAYS) * 86400


def member(carrier: str, carrier_call_id: str) -> str:
    """How a call is counted: its carrier and the carrier's id (the same on every delivery)."""
    return f"{carrier}:{carrier_call_id}"


def new_call_id() -> str:
    """A fresh call id, ours (carriers' ids stay in the record)."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class Reservation:
    """What an outbound call holds of its tenant's daily spend cap."""

    cents: int
    day: str
    cents_per_minute: int

    def as_fields(self) -> dict[str, str]:
        """As fields of the call's hash."""
        return {
            "reserved_cents": str(self.cents),
            "reserved_day": self.day,
            "cents_per_minute": str(self.cents_per_minute),
        }


#: What an outbound call does when a machine answers it.
VOICEMAIL_ACTIONS = ("hang_up", "leave_message")
#: The longest voicemail message, in characters.
MAX_VOICEMAIL_MESSAGE = 500


@dataclass(frozen=True)
class VoicemailRequest:
    """An outbound call's choice on a machine: hang up, or leave ``message`` after its greeting."""

    action: str
    message: str = ""

    def __post_init__(self) -> None:
        if self.action not in VOICEMAIL_ACTIONS:
            raise ValueError(f"unknown voicemail action {self.action!r}")
        if self.action == "leave_message" and not self.message.strip():
            raise ValueError("leave_message needs a message")
        if len(self.message) > MAX_VOICEMAIL_MESSAGE:
            raise ValueError(f"a voicemail message has at most {MAX_VOICEMAIL_MESSAGE} characters")


@dataclass(frozen=True)
class Voicemail:
    """A call's voicemail choice and what the carrier's detection said so far (message opened).

    ``answered_by`` is empty until the first result; ``greeting_ended``: a machine's greeting
    is over; ``final``: no further result will come.
    """

    action: str
    message: str
    answered_by: str
    result: str = ""
    greeting_ended: bool = False
    final: bool = False


@dataclass(frozen=True)
class CallRecord:
    """What the platform knows about one call (its parties' numbers opened)."""

    call_id: str
    carrier: str
    carrier_call_id: str
    tenant: str
    agent: str  # the agent's id
    from_number: str
    to_number: str
    direction: str
    state: CallState
    created_at: float
    updated_at: float
    agent_name: str = ""
    routing: Mapping[str, str] | None = None
    from_ref: str = ""  # keyed digests of the parties (recordings.subjects.subject_ref)
    to_ref: str = ""
    voicemail_action: str = ""  # outbound: hang_up | leave_message when detection was asked
    answered_by: str = ""  # human | machine | unknown, by the carrier's detection
    language: str = ""  # ISO 639-1: the call's (an auto agent's: detected once fixed)

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> CallRecord:
        """Parse a call hash."""
        plain = [
            k
            for k in cls.__dataclass_fields__
            if not k.endswith("_at") and k not in ("routing", "state")
        ]
        routing = {k[8:]: v for k, v in raw.items() if k.startswith("routing_")}
        return cls(
            **{k: raw.get(k, "") for k in plain},
            state=CallState(raw["state"]),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            routing=routing or None,
        )


@dataclass(frozen=True)
class Turn:
    """One utterance of the conversation."""

    role: str  # "caller" or "agent"
    text: str
    at: float
    interrupted: bool = False  # the caller talked over this agent turn

    def __post_init__(self) -> None:
        if self.role not in ("caller", "agent"):
            raise ValueError(f"unknown role {self.role!r}")


class Opened(NamedTuple):
    """An inbound call as recorded: its id, whether this delivery created it, its state.

    ``state`` is ``None`` when a repeated delivery finds the first call's record gone.
    """

    call_id: str
    created: bool
    state: CallState | None
