"""The embedded server's kept prompt states: the real SmolLM2 model, in process and served."""

from __future__ import annotations

import re
from pathlib import Path

import llama_cpp
import pytest
from openai import AsyncOpenAI

from llm import EmbeddedLLMServer
from llm.llama_server import PromptStateLlama, PromptStates
from tests.helpers import greedy

A1 = (
    "You answer the phone for a bakery. It opens at seven on weekdays and at eight on "
    "Saturday.\nCaller: What time do you open on Saturday?\nAgent:"
)
A2 = A1 + " We open at eight on Saturday.\nCaller: And do you sell birthday cakes?\nAgent:"
B1 = (
    "You answer the phone for a garage. It repairs cars and bicycles.\n"
    "Caller: Can you fix a flat tyre today?\nAgent:"
)


def test_a_state_is_found_by_its_longest_shared_prefix() -> None:
    states = PromptStates(budget_bytes=100)
    states.put([1, 2, 3], b"abc")
    states.put([1, 2, 9, 9], b"x")
    assert states.longest([1, 2, 3, 4, 5]) == (3, (1, 2, 3), b"abc")
    assert states.longest([1, 2, 9, 9, 7]) == (4, (1, 2, 9, 9), b"x")
    assert states.longest([7, 1, 2]) is None


def test_a_longer_prompt_of_the_same_conversation_replaces_its_prefix() -> None:
    states = PromptStates(budget_bytes=100)
    states.put([1, 2, 3], b"abc")
    states.put([1, 2, 3, 4, 5], b"abcde")
    assert len(states) == 1 and states.longest([1, 2, 3]) == (3, (1, 2, 3, 4, 5), b"abcde")


def test_the_least_recently_used_state_goes_first_beyond_the_budget() -> None:
    states = PromptStates(budget_bytes=10)
    states.put([1], b"aaaa")
    states.put([2], b"bbbb")
    assert states.longest([1, 0]) is not None  # [1] used: [2] is now the oldest
    states.put([3], b"cccc")
    assert states.longest([2, 0]) is None
    assert states.longest([1, 0]) is not None and states.longest([3, 0]) is not None
    assert states.size == 8


def test_a_restored_state_answers_as_if_the_conversation_had_stayed(gguf: Path) -> None:
    """A's prompt is read, B's replaces it in the context, A's next prompt comes: the kept
    state of A is restored and only A's new tokens are read, and the model continues exactly
    as a plain llama.cpp model does that never read B in between."""
    kept = PromptStateLlama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    plain = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    a1, a2, b1 = (kept.tokenize(t.encode()) for t in (A1, A2, B1))
    assert a2[: len(a1)] == a1

    greedy(kept, a1, 2)  # the state is kept once the first token is out
    assert kept.last_prompt == (0, len(a1)) and len(kept.prompt_states) == 1
    greedy(kept, b1, 2)
    shared = llama_cpp.Llama.longest_token_prefix(a1, b1)  # "You answer the phone for a"
    assert kept.last_prompt[0] == shared
    restored = greedy(kept, a2, 12)
    assert kept.last_prompt == (len(a1), len(a2))  # only A's new turn was read

    greedy(plain, a1, 1)  # the same reads, without B in between
    assert greedy(plain, a2, 12) == restored


def test_without_a_budget_nothing_is_kept(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PromptStateLlama, "budget_bytes", 0)
    model = PromptStateLlama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    a1, a2, b1 = (model.tokenize(t.encode()) for t in (A1, A2, B1))
    for tokens in (a1, b1, a2):
        greedy(model, tokens, 2)
    shared = llama_cpp.Llama.longest_token_prefix(a2, b1)
    assert len(model.prompt_states) == 0 and model.last_prompt[0] == shared


async def alternate(server: EmbeddedLLMServer, log: Path) -> list[tuple[str, ...]]:
    """Two conversations taking turns at ``server`` (as two calls do): what it logged."""
    endpoint = server.start()
    try:
        client = AsyncOpenAI(base_url=endpoint.v1, api_key="not-needed")
        history = {
            "a": [{"role": "system", "content": A1.split("\n")[0]}],
            "b": [{"role": "system", "content": B1.split("\n")[0]}],
        }
        questions = {
            "a": ["What time do you open on Saturday?", "Do you sell birthday cakes?"],
            "b": ["Can you fix a flat tyre today?", "How much does it cost?"],
        }
        for turn in range(2):
            for name in ("a", "b"):
                history[name].append({"role": "user", "content": questions[name][turn]})
                answer = await client.chat.completions.create(
                    model=endpoint.model, messages=history[name], max_tokens=24, temperature=0
                )
                text = answer.choices[0].message.content or ""
                assert text.strip()
                history[name].append({"role": "assistant", "content": text})
    finally:
        server.stop()
    return re.findall(
        r"prompt of (\d+) tokens: (\d+) (from a kept state|in the context), (\d+) read",
        log.read_text(),
    )


async def test_the_server_reads_only_each_conversations_new_turn(
    gguf: Path, tmp_path: Path
) -> None:
    prompts = await alternate(
        EmbeddedLLMServer(gguf, "smollm2", tmp_path / "llm.log"), tmp_path / "llm.log"
    )
    assert len(prompts) == 4, prompts
    # Each conversation's second turn: the context held the other one; its own first prompt
    # was restored whole, and only the answer and the new question were read.
    for (first, *_), (total, kept, where, read) in zip(prompts[:2], prompts[2:], strict=True):
        assert where == "from a kept state", prompts
        assert int(kept) == int(first) and int(kept) + int(read) == int(total), prompts


async def test_a_server_without_a_budget_reads_each_history_again(
    gguf: Path, tmp_path: Path
) -> None:
    log = tmp_path / "llm.log"
    prompts = await alternate(EmbeddedLLMServer(gguf, "smollm2", log, prompt_states_mb=0), log)
    assert len(prompts) == 4, prompts
    for (first, *_), (_, kept, where, read) in zip(prompts[:2], prompts[2:], strict=True):
        assert where == "in the context" and int(kept) < int(first) < int(read), prompts
