"""The contract every carrier package implements, and the kit each one exports.

Verification and parsing are pure: bytes, headers and secrets in, a verdict or a parsed event
out, no I/O and no clock read. Media codecs are pure too: wire messages to pipecat frames and
back; call control (hanging up, transferring) lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

#: Seconds a carrier's own time limit leaves after the platform's maximum call length: time
#: for the closing phrase and the hang-up. The carrier cuts a call only if the platform did not.
HANGUP_GRACE_S = 30


class Carrier(StrEnum):
    """The carriers of the DPA's sub-processor list."""

    TWILIO = "twilio"
    TELNYX = "telnyx"
    SINCH = "sinch"


def carrier_time_limit(max_seconds: int) -> int:
    """The hard limit a carrier is given for a call whose platform maximum is ``max_seconds``."""
    return max_seconds + HANGUP_GRACE_S


@dataclass(frozen=True)
class Verdict:
    """The outcome of a signature check; ``reason`` says why it failed."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class InboundCall:
    """A carrier's notice that a caller dialled one of our numbers."""

    carrier: str
    carrier_call_id: str
    account_id: str
    from_number: str
    to_number: str
    status: str

    def __post_init__(self) -> None:
        for name in ("carrier_call_id", "to_number"):
            if not getattr(self, name):
                raise ValueError(f"inbound call without {name}")


@dataclass(frozen=True)
class StatusUpdate:
    """A carrier's status callback: the call reached ``status``."""

    carrier_call_id: str
    status: str
    sequence: int | None = None
    duration_s: int | None = None


@dataclass(frozen=True)
class StreamStart:
    """The first meaningful message of a media stream: which call it carries."""

    stream_id: str
    carrier_call_id: str
    parameters: Mapping[str, str]


class Detection(StrEnum):
    """What an outbound call asks of the carrier's answering-machine detection."""

    DETECT = "detect"  # who answered, as soon as known (to hang up on a machine)
    MESSAGE_END = "message_end"  # who answered and, for a machine, when its greeting ended


class AnsweredBy(StrEnum):
    """Who answered an outbound call, by the carrier's detection."""

    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class MachineDetection:
    """A carrier's answering-machine detection result for one call.

    ``greeting_ended``: a machine's greeting is over (beep or silence), a message can be
    left now. ``final``: no further result follows (a fax, an undecided detection).
    ``result`` is the carrier's own word for it (``machine_end_beep``, ``beep_detected``...).
    """

    carrier_call_id: str
    answered_by: AnsweredBy
    result: str
    greeting_ended: bool = False
    final: bool = True


@dataclass(frozen=True)
class AvailableNumber:
    """A number a carrier offers for rent."""

    carrier: str
    number: str
    country: str
    locality: str = ""


@dataclass(frozen=True)
class RentedNumber:
    """A number we rent, with the carrier's id for it."""

    carrier: str
    number: str
    carrier_id: str


@runtime_checkable
class CallControl(Protocol):
    """Acting on a live call through the carrier's REST API."""

    async def hang_up(self, call_id: str) -> None:  # pragma: no cover - protocol
        """End the call."""
        ...

    async def transfer(
        self, call_id: str, number: str, summary_url: str | None = None, *, call_ref: str = ""
    ) -> None:  # pragma: no cover - protocol
        """Send the call on to ``number``; the person first hears ``summary_url`` (warm).

        ``call_ref`` is our call id, for a carrier that echoes it on the transfer leg's events.
        """
        ...


@runtime_checkable
class Provisioning(Protocol):
    """Numbers: search what a carrier offers, rent one pointing at the platform, release it."""

    async def search(
        self, country: str, area_code: str | None = None, contains: str | None = None
    ) -> list[AvailableNumber]:  # pragma: no cover - protocol
        """Numbers of ``country`` for rent."""
        ...

    async def rent(
        self, number: str, voice_url: str, status_url: str
    ) -> RentedNumber:  # pragma: no cover - protocol
        """Rent ``number``; its calls come to ``voice_url``."""
        ...

    async def release(self, rented: RentedNumber) -> None:  # pragma: no cover - protocol
        """Give ``rented`` back."""
        ...


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP request as a carrier sent it: the public URL it called, raw body, headers."""

    method: str
    url: str  # the public URL (BONMONIQ_PUBLIC_URL + path + query), as the carrier signed it
    body: bytes
    headers: Mapping[str, str]  # lower-case names

    def __post_init__(self) -> None:
        if any(k != k.lower() for k in self.headers):
            object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})


@runtime_checkable
class WebhookVerifier(Protocol):
    """Checks that a request comes from the carrier: pure, the account's secrets held inside."""

    def verify(self, request: WebhookRequest, now: float) -> Verdict:  # pragma: no cover
        """Verdict on one request at ``now`` (unix seconds)."""
        ...


@runtime_checkable
class Control(CallControl, Provisioning, Protocol):
    """A carrier's REST API: live calls and numbers."""


class PublicUrls(Protocol):
    """The platform's public addresses, as carriers reach them."""

    def public(self, path: str) -> str:  # pragma: no cover - protocol
        """The public https URL of ``path``."""
        ...

    def public_ws(self, path: str) -> str:  # pragma: no cover - protocol
        """The public WebSocket URL of ``path``."""
        ...


@dataclass(frozen=True)
class Paths:
    """Where a carrier reaches the platform: a rented number's calls, status callbacks, media."""

    voice: str
    status: str
    media: str


class Kit(Protocol):
    """Everything of one configured carrier: its verifier, REST control, paths and dialer."""

    @property
    def carrier(self) -> Carrier:  # pragma: no cover - protocol
        """Which carrier."""
        ...

    @property
    def paths(self) -> Paths:  # pragma: no cover - protocol
        """Its webhook and media paths."""
        ...

    @property
    def verifier(self) -> WebhookVerifier:  # pragma: no cover - protocol
        """Checks its webhooks' signatures."""
        ...

    @property
    def control(self) -> Control:  # pragma: no cover - protocol
        """Its REST API."""
        ...

    @property
    def warm_transfer(self) -> bool:  # pragma: no cover - protocol
        """Whether the person a call is transferred to can hear a summary first."""
        ...

    async def dial(
        self,
        urls: PublicUrls,
        from_: str,
        to: str,
        call_id: str,
        time_limit_s: int,
        detection: Detection | None = None,
    ) -> str:  # pragma: no cover - protocol
        """Place call ``call_id`` so that its media comes to us; the carrier's call id.

        With ``detection`` the carrier runs its answering-machine detection on the call.
        """
        ...
