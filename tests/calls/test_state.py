"""Call states: their rank, which are final, and the strings Redis and the API carry."""

from __future__ import annotations

import pytest

from calls.errors import UnknownCallState
from calls.state import CallState
from calls.store import state_of

S = CallState


def test_states_keep_their_stored_strings() -> None:
    assert [str(s) for s in S] == [
        "queued",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "failed",
        "no-answer",
        "canceled",
        "rejected",
    ]
    assert S("in-progress") is S.IN_PROGRESS and S.NO_ANSWER == "no-answer"


def test_a_call_moves_forward_to_one_of_its_final_states() -> None:
    assert S.QUEUED.rank < S.RINGING.rank < S.IN_PROGRESS.rank < S.COMPLETED.rank
    assert S.final() == {S.COMPLETED, S.BUSY, S.FAILED, S.NO_ANSWER, S.CANCELED, S.REJECTED}
    assert all(s.is_final == (s.rank == S.COMPLETED.rank) for s in S)
    assert not any(s.is_final for s in (S.QUEUED, S.RINGING, S.IN_PROGRESS))


def test_an_unknown_status_is_refused_with_its_code() -> None:
    assert state_of("busy") is S.BUSY
    with pytest.raises(UnknownCallState) as e:
        state_of("answered")
    assert e.value.code == "call_state_unknown" and isinstance(e.value, ValueError)
