"""llama-cpp-python's OpenAI-compatible server, keeping each conversation's prompt state.

The embedded server has one context: its KV cache holds the last prompt it read. Calls share
the server, so each call's next turn used to find another call's conversation there and had to
read its whole history again (1.3-1.5 s of a 2-core CPU for a few turns of history, measured
with two conversations taking turns). :class:`PromptStateLlama` keeps the KV state of the
recent prompts (sequence 0 only: no logits, no sampler) and, before reading a prompt, restores
the one sharing the longest prefix with it, so a call's turn reads only what is new since its
previous turn (0.4 s in the same measurement).

Run as ``python -m llm.llama_server`` with ``llama_cpp.server``'s arguments; the states are
bounded by ``BONMONIQ_LLM_PROMPT_STATES_MB`` (default 256; 0 keeps none). Each prompt logs how
many of its tokens were already there and how many it read.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Generator, Sequence
from typing import Any

import llama_cpp
from llama_cpp.server.__main__ import main as server_main

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


class PromptStateLlama(llama_cpp.Llama):
    """A ``Llama`` that restores the best remembered prompt state before reading a prompt."""

    budget_bytes = int(os.environ.get("BONMONIQ_LLM_PROMPT_STATES_MB", "256")) << 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ``Llama``."""
        super().__init__(*args, **kwargs)
        self.prompt_states = PromptStates(self.budget_bytes)
        #: The last prompt: its tokens already in the context when it came, and its length.
        self.last_prompt = (0, 0)

    def generate(  # type: ignore[override]  # its callers pass everything by keyword
        self, tokens: Sequence[int], **kwargs: Any
    ) -> Generator[int, Sequence[int] | None, None]:
        """``Llama.generate``, from the best state; the prompt's state kept once it is read."""
        tokens = list(tokens)
        if kwargs.get("reset", True):
            restored = self._restore(tokens)
            # Llama.generate reads at least the prompt's last token again.
            kept = min(self._held(tokens), len(tokens) - 1)
            self.last_prompt = (kept, len(tokens))
            log.info(
                "prompt of %d tokens: %d %s, %d read",
                len(tokens), kept, "from a kept state" if restored else "in the context",
                len(tokens) - kept,
            )  # fmt: skip
        inner = super().generate(tokens, **kwargs)
        try:
            token = next(inner)
        except StopIteration:
            return
        try:
            sent = yield token  # the first token goes out before the state is copied
            # The prompt has been read; the sampled token is not evaluated yet.
            if self.n_tokens == len(tokens):
                self._save(tokens)
            while True:
                token = inner.send(sent)
                sent = yield token
        except StopIteration:
            return
        finally:
            inner.close()

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
        self._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not llama_cpp.llama_state_seq_set_data(self._ctx.ctx, buf, len(state), 0):
            self._ctx.kv_cache_clear()
            self.n_tokens = 0
            return False
        self.input_ids[: len(key)] = key
        self.n_tokens = len(key)
        # The logits are not in the saved state: the next read replays at least one token.
        self._requires_eval = True
        return True

    def _save(self, tokens: list[int]) -> None:
        if self.prompt_states.budget <= 0:
            return
        size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx.ctx, buf, size, 0)
        if written:
            self.prompt_states.put(tokens, ctypes.string_at(buf, written))


def main() -> None:
    """``python -m llama_cpp.server``, its models created as :class:`PromptStateLlama`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    llama_cpp.Llama = PromptStateLlama  # type: ignore[misc]  # the server creates llama_cpp.Llama
    server_main()


if __name__ == "__main__":
    main()
