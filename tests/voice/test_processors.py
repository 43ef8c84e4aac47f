"""Small processors' rules: the caller's spoken refusal of the recording, closing phrases."""

from __future__ import annotations

import pytest

from voice.processors import is_closing
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


@pytest.mark.parametrize(
    ("text", "closing"),
    [
        ("Goodbye.", True),
        ("OK, bye!", True),
        ("good-bye then", True),
        ("Thanks, bye bye", True),
        ("What time do you open?", False),
        ("Can I buy a byte?", False),
        ("Byers street", False),
    ],
)
def test_closing_phrases(text: str, closing: bool) -> None:
    assert is_closing(text) is closing
