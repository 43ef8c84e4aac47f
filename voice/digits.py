"""The caller's keypad: digit sequences for the model, the objection key, the key for a person.

Keys, as the caller presses them (first key = the first key outside a sequence):

- ``9`` first: the objection to the recording. The key goes on to the consent gate
  (voice/recorder.py), as it always has.
- ``0`` first, when the agent can transfer: the caller asks for a person
  (``CallSession.transfer(by="dtmf")``). Without a transfer number it is like any other key.
- any other key first, when the agent has ``dtmf`` (routing/directory.DigitCollection): it
  starts a sequence. Without ``dtmf`` the key is ignored.
- inside a sequence every key is a digit (``0`` and ``9`` too) until the agent's terminator
  (``#`` or ``*``, not part of the digits), ``max_digits`` keys, or ``timeout_s`` without a key.
- the model's ``collect_digits`` tool arms the keypad: the next key starts a sequence whatever
  it is (the agent's settings, or the defaults of DigitCollection).
- while the caller is handed to a person (``holding()``) only ``9`` (the objection) passes;
  every other key is dropped.

A finished sequence reaches the model as the caller's words, ``"(keypad) 12345"``, in a user
turn of its own. The digits are never logged: only their count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputDTMFFrame,
    LLMMessagesAppendFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from routing.directory import DigitCollection
from voice.recorder import OBJECTION_KEY

log = logging.getLogger(__name__)

#: The first key that asks for a person (when the agent can transfer).
PERSON_KEY = "0"
#: How a finished sequence reads to the model.
KEYPAD_PREFIX = "(keypad)"
#: The settings of a sequence the model asks for on an agent without its own.
DEFAULT_COLLECTION = DigitCollection()


def keypad_text(digits: str) -> str:
    """The caller's input as the model reads it."""
    return f"{KEYPAD_PREFIX} {digits}"


class DigitCollector(FrameProcessor):
    """Right after the transport's input: turns keypad frames into inputs for the model.

    ``on_digits(text, count)`` is awaited with each finished sequence's text and its number of
    digits before it goes to the model (the session records the caller's turn and the count);
    ``on_person()`` when the caller presses the person key first and ``can_transfer()`` says
    the agent can transfer (it must not wait for the pipeline: the frame is still in it).
    """

    def __init__(
        self,
        settings: DigitCollection | None,
        *,
        on_digits: Callable[[str, int], Awaitable[None]],
        on_person: Callable[[], Awaitable[None]] | None = None,
        can_transfer: Callable[[], bool] = lambda: False,
        holding: Callable[[], bool] = lambda: False,
    ) -> None:
        """Collect sequences with ``settings`` (None: only when the model arms the keypad)."""
        super().__init__()
        self.settings = settings
        self._on_digits = on_digits
        self._on_person = on_person
        self._can_transfer = can_transfer
        self._holding = holding
        self._armed: DigitCollection | None = None
        self._current: DigitCollection | None = None
        self._digits = ""
        self._timer: asyncio.Task[None] | None = None

    @property
    def collecting(self) -> bool:
        """Whether a sequence is under way."""
        return self._current is not None

    def arm(self) -> None:
        """Make the next key start a sequence, whatever it is (the ``collect_digits`` tool)."""
        self._armed = self.settings or DEFAULT_COLLECTION

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Keypad frames are handled here; everything else passes."""
        await super().process_frame(frame, direction)
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop_timer()
        if isinstance(frame, InputDTMFFrame):
            if await self._key(str(frame.button.value)):
                return
        await self.push_frame(frame, direction)

    async def _key(self, key: str) -> bool:
        """Handle one key; False when the frame goes on down the pipeline."""
        if self._holding():
            return key != OBJECTION_KEY  # the caller is being handed over: only 9 counts
        if self._current is not None:
            await self._add(key)
            return True
        if self._armed is not None:
            self._current, self._armed = self._armed, None
            if key == self._current.terminator:  # nothing typed yet: wait for a digit
                self._armed, self._current = self._current, None
                return True
            await self._add(key)
            return True
        if key == OBJECTION_KEY:
            return False  # the consent gate's
        if key == PERSON_KEY and self._on_person is not None and self._can_transfer():
            await self._on_person()
            return True
        if self.settings is None:
            return False
        if key == self.settings.terminator:
            return True
        self._current = self.settings
        await self._add(key)
        return True

    async def _add(self, key: str) -> None:
        assert self._current is not None
        if self._current.terminator and key == self._current.terminator:
            await self._finish()
            return
        self._digits += key
        if len(self._digits) >= self._current.max_digits:
            await self._finish()
            return
        await self._stop_timer()
        self._timer = self.create_task(self._time_out(self._current.timeout_s), "keypad-timeout")

    async def _time_out(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._timer = None  # finishing must not cancel the task it runs in
        await self._finish()

    async def _stop_timer(self) -> None:
        if self._timer is not None:
            timer, self._timer = self._timer, None
            await self.cancel_task(timer)

    async def _finish(self) -> None:
        """Hand the sequence to the model as the caller's input."""
        await self._stop_timer()
        digits, self._digits, self._current = self._digits, "", None
        if not digits or self._holding():  # nothing reaches the model during a hand-over
            return
        text = keypad_text(digits)
        log.info("keypad input", extra={"digits": len(digits)})
        await self._on_digits(text, len(digits))
        await self.push_frame(
            LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)
        )
