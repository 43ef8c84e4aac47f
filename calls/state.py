"""The states of a call, ranked: a call only ever moves to a state of higher rank."""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    """Where a call stands; its value is what Redis stores and the API shows."""

    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def rank(self) -> int:
        """Its progress: status callbacks arrive out of order, and a state never moves back."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        """Whether the call is over (its reservation against the spend cap is settled)."""
        return self.rank == _FINAL_RANK

    @classmethod
    def final(cls) -> frozenset[CallState]:
        """Every state in which the call is over."""
        return frozenset(s for s in cls if s.is_final)


_FINAL_RANK = 3
_RANK = {
    CallState.QUEUED: 0,
    CallState.RINGING: 1,
    CallState.IN_PROGRESS: 2,
    **dict.fromkeys(
        (
            CallState.COMPLETED,
            CallState.BUSY,
            CallState.FAILED,
            CallState.NO_ANSWER,
            CallState.CANCELED,
            CallState.REJECTED,
        ),
        _FINAL_RANK,
    ),
}
