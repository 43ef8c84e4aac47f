"""Small processors' rules: the caller's spoken refusal of the recording."""

from __future__ import annotations

import pytest

from voice.recorder import is_refusal


@pytest.mark.parametrize(
    ("text", "refuses"),
    [
        ("Please do not record this call.", True),
        ("Don't record me.", True),
        ("Stop recording, please.", True),
        ("I object to the recording.", True),
        ("I don't want this recorded.", True),
        ("Can you record my order for a cake?", False),
        ("What time do you open on Saturday?", False),
        ("The record shop next door is closed.", False),
    ],
)
def test_spoken_refusal_of_the_recording(text: str, refuses: bool) -> None:
    assert is_refusal(text) is refuses
