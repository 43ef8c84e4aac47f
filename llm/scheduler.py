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

import logging
import mmap
import os
import re
import struct
import threading
from collections import deque
from contextvars import ContextVar
from pathlib import Path

#: A sentence's end: its punctuation, the next piece starting with a space or a line break.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")

#: Where a first clause ends (followed by a space): the TTS speaks an answer's first clause alone.
CLAUSE_ENDS = (",", ";", ":")

#: The longest the rest of one answer waits, in all, for work callers wait for (the embedded
#: server's next tokens and the TTS's later chunks alike).
GIVE_WAY_LIMIT_S = 1.0

#: The server request being handled: its turn (None outside the server).
current_turn: ContextVar[Turn | None] = ContextVar("current_turn", default=None)


def sentence_ends(before: str, piece: str) -> bool:
    """Whether ``piece``, written after ``before``, starts a new sentence.

    The one rule for both the server's pauses and the client's cut (llm/client.py).
    """
    return piece[:1].isspace() and bool(_SENTENCE_END.search(before.rstrip(" ")))


def first_chunk_ends(before: str, piece: str) -> bool:
    """Whether ``piece`` starts an answer's second chunk for the TTS: after a clause or sentence.

    The rule of the TTS's ``FirstClauseAggregator`` (voice/services.py), for the server.
    """
    return sentence_ends(before, piece) or (
        piece[:1].isspace() and before.rstrip(" ").endswith(CLAUSE_ENDS)
    )


class UrgencyBoard:
    """How much work callers are waiting for in the platform, readable by its LLM server.

    One 8-byte counter in a small file that both processes map: the platform
    (``voice/engines.Urgency``) writes how many urgent jobs run (Whisper decodes, first chunks
    being synthesized); the embedded server reads it before each token of the rest of an
    answer and waits while it is not zero (:class:`llm.llama_server.PromptStateLlama`).
    """

    _FORMAT = "<q"

    def __init__(self, path: Path, create: bool = False) -> None:
        """Map the board at ``path``; ``create`` makes it (zero) first."""
        if create:  # a new file, so that a process still mapping an old one is not cut short
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = path.with_name(f".{path.name}.{os.getpid()}")
            fresh.write_bytes(bytes(8))
            fresh.replace(path)
        self.path = path
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    @classmethod
    def from_env(cls) -> UrgencyBoard | None:
        """The board named by ``BONMONIQ_LLM_URGENCY_FILE``, if it names one that exists."""
        name = os.environ.get("BONMONIQ_LLM_URGENCY_FILE")
        if not name:
            return None
        try:
            return cls(Path(name))
        except (OSError, ValueError) as e:  # missing or short: the server runs without it
            logging.getLogger("bonmoniq.llm").warning("no urgency board at %s: %s", name, e)
            return None

    def set(self, count: int) -> None:
        """Urgent jobs running now (an aligned 8-byte write: readers see old or new)."""
        struct.pack_into(self._FORMAT, self._map, 0, count)

    def get(self) -> int:
        """Urgent jobs running now."""
        return int(struct.unpack_from(self._FORMAT, self._map, 0)[0])


class Turn:
    """One request's place in the line for the model."""

    def __init__(self) -> None:
        """A turn not yet in any line."""
        self.closed = False
        self.scheduler: Scheduler | None = None
        #: Its answer's first chunk is written: its caller is hearing it, not waiting for it.
        self.heard = False

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

    @property
    def newcomers(self) -> int:
        """How many requests in line have no answer out yet (a caller waits for each)."""
        with self._cond:
            return sum(1 for t in self._line if not t.heard)

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
