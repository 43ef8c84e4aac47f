"""The caller's keypad (voice/digits.py) on real pipecat frames: sequences, ends, 9 and 0."""

from __future__ import annotations

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import Frame, InputDTMFFrame, LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from routing.directory import DigitCollection
from voice.digits import DigitCollector
from voice.recorder import ConsentGate


class Desk:
    """What the session is told: sequences, requests for a person, objections."""

    def __init__(self) -> None:
        self.sequences: list[tuple[str, int]] = []
        self.person = 0
        self.objections: list[str] = []

    async def digits(self, text: str, count: int) -> None:
        self.sequences.append((text, count))

    async def ask_person(self) -> None:
        self.person += 1

    async def objection(self, how: str) -> None:
        self.objections.append(how)


def keys(typed: str) -> list[Frame]:
    return [InputDTMFFrame(KeypadEntry(k)) for k in typed]


async def press(
    typed: str | list[Frame],
    settings: DigitCollection | None,
    *,
    transfer: bool = False,
    armed: bool = False,
    wait_s: float = 0.0,
    holding: bool = False,
) -> tuple[Desk, list[str], list[Frame]]:
    """Type ``typed`` into a collector followed by the consent gate, as in a call's pipeline.

    Returns what the session was told, the texts that went to the model and the keypad frames
    that went past the collector.
    """
    desk = Desk()
    collector = DigitCollector(
        settings,
        on_digits=desk.digits,
        on_person=desk.ask_person,
        can_transfer=lambda: transfer,
        holding=lambda: holding,
    )
    if armed:
        collector.arm()
    gate = ConsentGate(desk.objection)
    frames = keys(typed) if isinstance(typed, str) else typed
    if wait_s:
        frames = [*frames, SleepFrame(sleep=wait_s)]
    down, _ = await run_test(Pipeline([collector, gate]), frames_to_send=frames)
    texts = [
        m["content"]
        for f in down
        if isinstance(f, LLMMessagesAppendFrame)
        for m in f.messages
        if m["role"] == "user"
    ]
    assert all(f.run_llm for f in down if isinstance(f, LLMMessagesAppendFrame))
    passed = [f for f in down if isinstance(f, InputDTMFFrame)]
    return desk, texts, passed


ORDERS = DigitCollection(max_digits=8, terminator="#", timeout_s=5.0)


async def test_a_sequence_ends_at_the_terminator_and_reaches_the_model_as_the_callers_words() -> (
    None
):
    desk, texts, passed = await press("48152#", ORDERS)
    assert texts == ["(keypad) 48152"]
    assert desk.sequences == [("(keypad) 48152", 5)]
    assert passed == [] and desk.objections == []


async def test_inside_a_sequence_nine_and_zero_are_digits() -> None:
    desk, texts, _ = await press("3090#", ORDERS, transfer=True)
    assert texts == ["(keypad) 3090"]
    assert desk.objections == [] and desk.person == 0


async def test_a_sequence_ends_at_max_digits_and_after_the_keypad_is_quiet() -> None:
    settings = DigitCollection(max_digits=4, terminator="", timeout_s=1.0)
    desk, texts, _ = await press("12345", settings, wait_s=2.0)
    # Four keys make a whole sequence; the fifth starts another, ended by the silence.
    assert texts == ["(keypad) 1234", "(keypad) 5"]
    assert [count for _, count in desk.sequences] == [4, 1]


async def test_nine_first_is_the_objection_to_the_recording() -> None:
    desk, texts, passed = await press("9", ORDERS)
    assert desk.objections == ["dtmf"] and texts == []
    assert [str(f.button.value) for f in passed] == ["9"]  # on to the consent gate


async def test_zero_first_asks_for_a_person_when_the_agent_can_transfer() -> None:
    desk, texts, passed = await press("0", ORDERS, transfer=True)
    assert desk.person == 1 and texts == [] and passed == []


async def test_zero_first_without_a_transfer_number_is_an_ordinary_key() -> None:
    desk, texts, _ = await press("07#", ORDERS, transfer=False)
    assert desk.person == 0 and texts == ["(keypad) 07"]
    # Without keypad input either, the key is ignored (it goes on, and nothing acts on it).
    desk, texts, passed = await press("0", None, transfer=False)
    assert desk.person == 0 and texts == [] and len(passed) == 1


async def test_an_agent_without_keypad_input_ignores_keys_but_nine() -> None:
    desk, texts, _ = await press("5#", None)
    assert texts == [] and desk.sequences == [] and desk.objections == []


async def test_the_terminator_first_starts_nothing() -> None:
    _, texts, _ = await press("#", ORDERS)
    assert texts == []


async def test_the_collect_digits_tool_makes_the_next_key_a_digit_whatever_it_is() -> None:
    # Armed by the model on an agent without its own settings: the defaults (terminator #).
    desk, texts, _ = await press("9876#", None, armed=True)
    assert texts == ["(keypad) 9876"]
    assert desk.objections == []
    # Once the sequence is over, 9 first is the objection again.
    desk, texts, _ = await press([*keys("0#"), *keys("9")], ORDERS, armed=True, transfer=True)
    assert texts == ["(keypad) 0"] and desk.objections == ["dtmf"] and desk.person == 0


async def test_while_the_caller_is_handed_over_only_the_objection_key_counts() -> None:
    desk, texts, passed = await press("12#09", ORDERS, transfer=True, armed=True, holding=True)
    assert texts == [] and desk.sequences == [] and desk.person == 0
    assert desk.objections == ["dtmf"]
    assert [str(f.button.value) for f in passed] == ["9"]
