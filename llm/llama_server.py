"""llama-cpp-python's OpenAI-compatible server, keeping prompt states and taking turns.

The embedded server has one context: its KV cache holds the last prompt it read, and calls
share the server, so a call's next turn would find another call's conversation there.
:class:`PromptStateLlama` keeps the KV state of the recent prompts (sequence 0 only: no
logits, no sampler) and, before reading a prompt, restores the one sharing the longest prefix
with it, so a call's turn reads only what is new since its previous turn (BENCHMARKS.md).

llama-cpp-python's server answers one request at a time, each to its end. Here requests
take turns by sentence (llm/scheduler.py): when a sentence of an answer has ended and another
request waits, the answer's state is copied and the waiting request goes first; the paused
answer is restored when its turn comes again, and continues token for token as it would have.

Run by the platform, the server also reads the platform's ``UrgencyBoard``
(``BONMONIQ_LLM_URGENCY_FILE``): once an answer's first chunk is written (what the TTS speaks
first), its next tokens wait while the platform runs work a caller waits for (a Whisper
decode, a first chunk's synthesis), at most ``give_way_limit_s`` per answer; a new request
coming in line ends the wait and goes first.

Run as ``python -m llm.llama_server`` with ``llama_cpp.server``'s arguments; the states are
bounded by ``BONMONIQ_LLM_PROMPT_STATES_MB`` (0 keeps none, though a paused
answer's state is always kept until it resumes). Each prompt logs how many of its tokens were
already there and how many it read; each pause, and each answer that gave way, is logged.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import llama_cpp
from llama_cpp.server import app as llama_app
from llama_cpp.server.__main__ import main as server_main

from llm.scheduler import (
    GIVE_WAY_LIMIT_S,
    Scheduler,
    Turn,
    UrgencyBoard,
    current_turn,
    first_chunk_ends,
    sentence_ends,
)
from llm.settings import PROMPT_STATES_MB

log = logging.getLogger("bonmoniq.llm")


class PromptStates:
    """KV states of prompts, by their tokens; least recently used dropped beyond ``budget``."""

    def __init__(self, budget_bytes: int) -> None:
        """Keep at most ``budget_bytes`` of state."""
        self.budget = budget_bytes
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._states)

    @property
    def size(self) -> int:
        """Bytes held."""
        return sum(len(s) for s in self._states.values())

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        """Remember ``state`` as what reading ``tokens`` left; a prefix's entry is replaced."""
        key = tuple(tokens)
        with self._lock:
            for old in [k for k in self._states if key[: len(k)] == k]:
                del self._states[old]
            self._states[key] = state
            while len(self._states) > 1 and self.size > self.budget:
                self._states.popitem(last=False)

    def longest(self, tokens: Sequence[int]) -> tuple[int, tuple[int, ...], bytes] | None:
        """The state sharing the longest prefix with ``tokens``: (shared length, key, state)."""
        best: tuple[int, tuple[int, ...], bytes] | None = None
        with self._lock:
            for key, state in self._states.items():
                shared = llama_cpp.Llama.longest_token_prefix(key, tokens)
                if shared and (best is None or shared > best[0]):
                    best = (shared, key, state)
            if best is not None:
                self._states.move_to_end(best[1])
        return best


@dataclass(frozen=True)
class Paused:
    """An answer that gave the model over: its context and sampler, to be put back."""

    tokens: list[int]
    state: bytes
    sampler: Any
    mirostat_mu: Any


class PromptStateLlama(llama_cpp.Llama):
    """A ``Llama`` that restores the best remembered prompt state before reading a prompt."""

    budget_bytes = int(os.environ.get("BONMONIQ_LLM_PROMPT_STATES_MB", PROMPT_STATES_MB)) << 20
    give_way_limit_s = GIVE_WAY_LIMIT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ``Llama``."""
        super().__init__(*args, **kwargs)
        self.prompt_states = PromptStates(self.budget_bytes)
        #: The last prompt: its tokens already in the context when it came, and its length.
        self.last_prompt = (0, 0)
        self.scheduler = Scheduler()
        #: Whose tokens the live context holds.
        self._live: Turn | None = None
        #: How much work callers wait for in the platform (None: the server runs alone).
        self.board = UrgencyBoard.from_env()

    def generate(  # type: ignore[override]  # its callers pass everything by keyword
        self, tokens: Sequence[int], **kwargs: Any
    ) -> Generator[int, Sequence[int] | None, None]:
        """``Llama.generate``, from the best state, taking turns with other requests.

        The prompt's state is kept once it is read. When a sentence of the answer has ended
        and another request waits, the answer's state is copied and the model given over
        (llm/scheduler.py); it is restored when this answer's turn comes again.
        """
        tokens = list(tokens)
        request = current_turn.get()  # the server's request: it may generate more than once
        turn = request or Turn()
        inner = super().generate(tokens, **kwargs)
        written = ""  # the answer's last characters, for its sentence ends
        paused: Paused | None = None
        sent: Sequence[int] | None = None
        step = 0
        first_done = False  # the answer's first chunk for the TTS is written
        gave_way_s = 0.0
        try:
            if self.scheduler.taken_from(turn):
                log.info("a request waits for the model, %d in line", self.scheduler.waiting + 1)
            while True:
                interrupted = False
                if first_done and gave_way_s < self.give_way_limit_s:
                    # A request that came in line meanwhile goes first.
                    waited, interrupted = self._give_way(self.give_way_limit_s - gave_way_s)
                    gave_way_s += waited
                if not self.scheduler.enter(turn):
                    return
                give_way = False
                try:
                    if step == 0:
                        self._begin(tokens, kwargs.get("reset", True))
                        token = next(inner)
                    else:
                        if self._live is not turn:
                            if paused is None:
                                raise RuntimeError("another request used the model mid-answer")
                            self._resume(paused)
                        elif step == 1 and self.n_tokens == len(tokens):
                            # The prompt is read and its first token out; not yet evaluated.
                            self._save(tokens)
                        token = inner.send(sent)
                    self._live = turn
                    # A character split over tokens is dropped: only spaces and "." count here.
                    piece = self.detokenize([token]).decode("utf-8", errors="ignore")
                    if self.scheduler.waiting and (interrupted or sentence_ends(written, piece)):
                        paused = self._pause()
                        give_way = paused is not None
                    if not first_done and first_chunk_ends(written, piece):
                        first_done = turn.heard = True
                    written = (written + piece)[-16:]
                except StopIteration:
                    return
                finally:
                    self.scheduler.leave(turn, give_way=give_way)
                sent = yield token
                step += 1
        finally:
            if gave_way_s >= 0.005:
                log.info("answer gave way %.2f s to work callers waited for", gave_way_s)
            inner.close()
            if request is None:
                turn.close()
            else:
                self.scheduler.release(turn)

    def _give_way(self, limit_s: float) -> tuple[float, bool]:
        """Wait while the platform runs work callers wait for, at most ``limit_s``.

        The rest of an answer is heard only after its first chunk has been spoken, so it waits
        while a Whisper decode or a first chunk's synthesis runs (the board's count) instead of
        taking their cores. A request coming in line ends the wait: it goes first (a caller
        waits for its first token; a paused answer in line waits with this one). Returns the
        seconds waited and whether such a request came.
        """
        board, line = self.board, self.scheduler
        if board is None or not board.get():
            return 0.0, False
        t0 = time.monotonic()
        while board.get() and not line.newcomers and time.monotonic() - t0 < limit_s:
            time.sleep(0.005)
        return time.monotonic() - t0, bool(line.newcomers)

    def _begin(self, tokens: list[int], reset: bool) -> None:
        """Before the prompt is read: the best kept state loaded, what is there logged."""
        if not reset:
            return
        restored = self._restore(tokens)
        # Llama.generate reads at least the prompt's last token again.
        kept = min(self._held(tokens), len(tokens) - 1)
        self.last_prompt = (kept, len(tokens))
        log.info(
            "prompt of %d tokens: %d %s, %d read",
            len(tokens),
            kept,
            "from a kept state" if restored else "in the context",
            len(tokens) - kept,
        )

    def _pause(self) -> Paused | None:
        """The answer so far, its context copied (and kept) before another request's turn."""
        key = self.input_ids[: self.n_tokens].tolist()
        state = self._seq_state()
        if state is None:
            return None
        if self.prompt_states.budget > 0:
            self.prompt_states.put(key, state)  # also the longest prefix of its next turn
        log.info("answer paused after %d tokens: another request waits", len(key))
        return Paused(key, state, self._sampler, self._mirostat_mu)

    def _resume(self, paused: Paused) -> None:
        """Put the paused answer's context and sampler back."""
        if not self._load(paused.tokens, paused.state):
            raise RuntimeError("llama.cpp could not restore a paused answer's state")
        self._sampler, self._mirostat_mu = paused.sampler, paused.mirostat_mu

    def _held(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` the live context holds."""
        held = self.input_ids[: self.n_tokens].tolist()
        return int(llama_cpp.Llama.longest_token_prefix(held, tokens))

    def _restore(self, tokens: list[int]) -> bool:
        """Load the kept state sharing more of ``tokens`` than the live context does."""
        live = self._held(tokens)
        found = self.prompt_states.longest(tokens)
        if found is None or found[0] <= live:
            return False
        _, key, state = found
        return self._load(list(key), state)

    def _load(self, tokens: list[int], state: bytes) -> bool:
        """Make ``state``, what reading ``tokens`` left, the live context."""
        self._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not llama_cpp.llama_state_seq_set_data(self._ctx.ctx, buf, len(state), 0):
            self._ctx.kv_cache_clear()
            self.n_tokens = 0
            self._live = None
            return False
        self.input_ids[: len(tokens)] = tokens
        self.n_tokens = len(tokens)
        # The logits are not in the saved state: the next read replays at least one token.
        self._requires_eval = True
        return True

    def _seq_state(self) -> bytes | None:
        """The live context's KV state (sequence 0, no logits)."""
        size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx.ctx, buf, size, 0)
        return ctypes.string_at(buf, written) if written else None

    def _save(self, tokens: list[int]) -> None:
        if self.prompt_states.budget <= 0:
            return
        state = self._seq_state()
        if state is not None:
            self.prompt_states.put(tokens, state)


async def untied_request() -> AsyncIterator[Any]:
    """The server's model for one request, without its one-request-at-a-time lock.

    It replaces ``llama_cpp.server.app.get_llama_proxy``, which the server enters around each
    completion. Requests take turns at the model by sentence instead (:class:`PromptStateLlama`);
    the request's turn ends with the request, however it ends.
    """
    turn = current_turn.get()
    if turn is None:  # not streamed: no publisher made one
        turn = Turn()
        current_turn.set(turn)
    try:
        yield llama_app._llama_proxy
    finally:
        turn.close()


_publish = llama_app.get_event_publisher


async def publish_in_turn(*args: Any, **kwargs: Any) -> None:
    """The server's streaming publisher, its request's turn closed as soon as it is cancelled.

    The server cancels a stream whose client has gone. A request waiting for its turn waits in
    a worker thread, which cancellation cannot reach: without this, a request dropped while in
    line (a speculative answer the caller talked over) would still read its prompt when its
    turn came, taking the model from those still waiting.
    """
    turn = Turn()
    current_turn.set(turn)

    async def close_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            turn.close()

    async with anyio.create_task_group() as group:
        group.start_soon(close_when_cancelled)
        try:
            await _publish(*args, **kwargs)
        finally:
            group.cancel_scope.cancel()


def main() -> None:
    """``python -m llama_cpp.server``, its models created as :class:`PromptStateLlama`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    llama_cpp.Llama = PromptStateLlama  # type: ignore[misc]  # the server creates llama_cpp.Llama
    llama_app.get_llama_proxy = untied_request
    llama_app.get_event_publisher = publish_in_turn
    server_main()


if __name__ == "__main__":
    main()
