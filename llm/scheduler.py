"""One model, several answers: which request the model computes next, switching at sentences.

The embedded server has one llama.cpp context, and llama-cpp-python's server computes one
request to its end before the next: at two calls, the second call's answer waited for the
whole of the first call's. But an answer is heard sentence by sentence, and the model writes a
sentence faster than the TTS speaks it, so while the first caller hears the first sentence the
model can write the second caller's. The :class:`Scheduler` lets a request keep the model
until one of its sentences has ended while another request waits; the waiting one goes next
and the paused one lines up behind it (round robin by sentence). vLLM, in production, does the
same per token with continuous batching.

The model's owner between two of its tokens is idle but keeps its place: the others wait
until it gives way, finishes, or is closed (its client gone). The server closes a request's
:class:`Turn` when the request ends, however it ends (``llm/llama_server.py``).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from contextvars import ContextVar

#: A sentence's end: its punctuation, the next piece starting with a space or a line break.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")

#: The server request being handled: its turn (None outside the server).
current_turn: ContextVar[Turn | None] = ContextVar("current_turn", default=None)


def sentence_ends(before: str, piece: str) -> bool:
    """Whether ``piece``, written after ``before``, starts a new sentence.

    The one rule for both the server's pauses and the client's cut (llm/client.py).
    """
    return piece[:1].isspace() and bool(_SENTENCE_END.search(before.rstrip(" ")))


class Turn:
    """One request's place in the line for the model."""

    def __init__(self) -> None:
        """A turn not yet in any line."""
        self.closed = False
        self.scheduler: Scheduler | None = None

    def close(self) -> None:
        """The request is over: it leaves the line, or the model if it holds it."""
        self.closed = True
        if self.scheduler is not None:
            self.scheduler.release(self)


class Scheduler:
    """Who uses the model: its owner, until it gives way to the requests in line."""

    def __init__(self) -> None:
        """A free model and an empty line."""
        self._cond = threading.Condition()
        self._owner: Turn | None = None
        self._line: deque[Turn] = deque()
        self._busy = False  # the owner is computing (between enter and leave)

    @property
    def waiting(self) -> int:
        """How many requests are in line."""
        return len(self._line)

    def taken_from(self, turn: Turn) -> bool:
        """Whether ``turn`` would wait now: another request holds the model or is in line."""
        with self._cond:
            return self._owner not in (None, turn) or any(t is not turn for t in self._line)

    def enter(self, turn: Turn) -> bool:
        """Block until ``turn`` may use the model; False if it was closed while waiting."""
        with self._cond:
            turn.scheduler = self
            if turn.closed:
                return False
            if self._owner is not turn:
                if turn not in self._line:
                    self._line.append(turn)
                while not turn.closed and (self._owner is not None or self._line[0] is not turn):
                    self._cond.wait()
                if turn.closed:
                    return False
                self._line.popleft()
                self._owner = turn
            self._busy = True
            return True

    def leave(self, turn: Turn, *, give_way: bool) -> None:
        """``turn``'s step is over; with ``give_way``, those in line go before its next."""
        with self._cond:
            self._busy = False
            if turn.closed or (give_way and self._line):
                self._owner = None
                if not turn.closed:
                    self._line.append(turn)
                self._cond.notify_all()

    def release(self, turn: Turn) -> None:
        """``turn`` wants nothing now: out of the line, the model freed unless it is mid-step.

        A step in progress frees the model when it ends if the turn is closed by then.
        """
        with self._cond:
            if turn in self._line:
                self._line.remove(turn)
            if self._owner is turn and not self._busy:
                self._owner = None
            self._cond.notify_all()
