"""Call events: validation, storage form, and the stage order check."""

from __future__ import annotations

import pytest

from calls.events import CallEvent, CallEventType, order_violations

T = CallEventType


def ev(kind: CallEventType, at: float = 1.0) -> CallEvent:
    return CallEvent(kind, "call_1", at)


def test_event_round_trip_and_validation() -> None:
    e = CallEvent(T.CALLER_TURN, "call_1", 12.5, {"text": "hi"})
    assert CallEvent.from_json(e.to_json()) == e
    assert CallEvent("caller_turn", "call_1", 1.0).type is T.CALLER_TURN  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CallEvent("nonsense", "call_1", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="call id"):
        CallEvent(T.INBOUND, "", 1.0)
    with pytest.raises(ValueError, match="timestamp"):
        CallEvent(T.INBOUND, "call_1", 0)


def test_a_normal_call_is_in_order() -> None:
    kinds = [
        T.INBOUND,
        T.STATUS,
        T.MEDIA_CONNECTED,
        T.ANNOUNCEMENT_STARTED,
        T.ANNOUNCEMENT_PLAYED,
        T.AGENT_TURN,
        T.CALLER_TURN,
        T.BARGE_IN,
        T.AGENT_TURN,
        T.MEDIA_CLOSED,
        T.STATUS,
        T.ENDED,
    ]
    assert order_violations([ev(k) for k in kinds]) == []


@pytest.mark.parametrize(
    ("kinds", "problem"),
    [
        ([T.MEDIA_CONNECTED, T.INBOUND], "inbound after media_connected"),
        (
            [T.INBOUND, T.MEDIA_CONNECTED, T.ANNOUNCEMENT_STARTED, T.AGENT_TURN],
            "before the announcement",
        ),
        ([T.INBOUND, T.MEDIA_CONNECTED, T.CALLER_TURN], "before the announcement"),
        ([T.ANNOUNCEMENT_PLAYED, T.MEDIA_CLOSED, T.AGENT_TURN], "after the media closed"),
    ],
)
def test_out_of_order_stages_are_reported(kinds: list[CallEventType], problem: str) -> None:
    assert any(problem in p for p in order_violations([ev(k) for k in kinds]))
