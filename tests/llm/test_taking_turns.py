"""Requests taking turns at the embedded model by sentence: the scheduler on its own, the real
SmolLM2 model in process with two threads, and the served model with two streaming clients."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import threading
import time
from pathlib import Path

import httpx
import llama_cpp
import pytest

from llm import EmbeddedLLMServer
from llm.llama_server import PromptStateLlama
from llm.scheduler import Scheduler, Turn, current_turn, sentence_ends
from tests.helpers import SYSTEM, chatml, greedy

# The scheduler, with threads and no model.


def start(target: threading.Thread) -> threading.Thread:
    target.daemon = True
    target.start()
    return target


def entered(
    scheduler: Scheduler, turn: Turn
) -> tuple[threading.Thread, threading.Event, list[bool]]:
    """A thread waiting for ``turn``: set when it got the model (result in the list)."""
    done, result = threading.Event(), []

    def run() -> None:
        result.append(scheduler.enter(turn))
        done.set()

    return start(threading.Thread(target=run)), done, result


def test_the_owner_keeps_the_model_until_it_gives_way() -> None:
    scheduler, a, b = Scheduler(), Turn(), Turn()
    assert scheduler.enter(a)
    scheduler.leave(a, give_way=False)
    _, b_in, result = entered(scheduler, b)
    assert not b_in.wait(0.2) and scheduler.waiting == 1
    assert scheduler.enter(a)  # between its tokens the owner comes back first
    scheduler.leave(a, give_way=True)
    assert b_in.wait(5) and result == [True]
    # a lined up behind b, and waits for b to give way or end
    _, a_in, result = entered(scheduler, a)
    assert not a_in.wait(0.2)
    scheduler.leave(b, give_way=False)
    assert not a_in.wait(0.2)
    b.close()
    assert a_in.wait(5) and result == [True]


def test_giving_way_with_nobody_in_line_keeps_the_model() -> None:
    scheduler, a, b = Scheduler(), Turn(), Turn()
    assert scheduler.enter(a)
    scheduler.leave(a, give_way=True)
    assert scheduler.waiting == 0
    _, b_in, _ = entered(scheduler, b)
    assert not b_in.wait(0.2)  # a still holds it: it gave way to nobody
    a.close()
    assert b_in.wait(5)


def test_a_request_closed_mid_step_frees_the_model_when_its_step_ends() -> None:
    """The server closes a turn when its client goes, maybe while its thread still computes."""
    scheduler, a, b = Scheduler(), Turn(), Turn()
    assert scheduler.enter(a)
    _, b_in, _ = entered(scheduler, b)
    a.close()
    assert not b_in.wait(0.2)  # a's step is still running
    scheduler.leave(a, give_way=False)
    assert b_in.wait(5)
    assert not scheduler.enter(a)  # a closed turn never gets the model again


def test_a_request_closed_while_in_line_leaves_the_line() -> None:
    scheduler, a, b, c = Scheduler(), Turn(), Turn(), Turn()
    assert scheduler.enter(a)
    _, b_in, b_result = entered(scheduler, b)
    time.sleep(0.05)
    _, c_in, c_result = entered(scheduler, c)
    time.sleep(0.05)
    assert scheduler.waiting == 2
    b.close()
    assert b_in.wait(5) and b_result == [False]
    assert scheduler.waiting == 1
    scheduler.leave(a, give_way=True)
    assert c_in.wait(5) and c_result == [True]


@pytest.mark.parametrize(
    ("before", "token", "ends"),
    [
        ("We do.", " We", True),
        ("Yes!", "\n", True),
        ('He said "no."', " Then", True),
        ("We open at 7", " a", False),
        ("We do.", "We", False),  # no space: "3.5", "e.g"
        ("", " Hello", False),
    ],
)
def test_sentence_ends(before: str, token: str, ends: bool) -> None:
    assert sentence_ends(before, token) is ends


# The real model, in process: two threads.


def test_a_waiting_request_is_answered_at_the_first_sentence_end_and_nothing_changes(
    gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writes a several-sentence answer; B comes after A's first token. B's tokens start
    before A's answer is done (A gave way at a sentence end), and both answers are token for
    token what a plain llama.cpp model writes for each prompt on its own."""
    shared = PromptStateLlama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    plain = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    a = plain.tokenize(chatml(SYSTEM, "Do you sell birthday cakes?").encode(), special=True)
    b = plain.tokenize(b"A garage repairs cars.\nCaller: Can you fix a tyre?\nAgent:")
    n = 48

    alone_a, alone_b = greedy(plain, a, n), greedy(plain, b, n)
    text = plain.detokenize(alone_a)
    assert any(
        sentence_ends(
            plain.detokenize(alone_a[:i]).decode(errors="ignore"),
            plain.detokenize([alone_a[i]]).decode(errors="ignore"),
        )
        for i in range(1, n - 8)
    ), f"A's answer needs a sentence end early on: {text!r}"

    events: list[tuple[str, int]] = []
    a_started = threading.Event()
    got: dict[str, list[int]] = {"a": [], "b": []}

    def answer(name: str, tokens: list[int]) -> None:
        for token in shared.generate(tokens, temp=0.0):
            events.append((name, token))
            got[name].append(token)
            if name == "a" and not a_started.is_set():
                a_started.set()
                # B in line before A's first sentence can end: the same order on any machine
                until = time.monotonic() + 30
                while not shared.scheduler.waiting and time.monotonic() < until:
                    time.sleep(0.001)
            if len(got[name]) == n:
                break

    def second() -> None:
        a_started.wait()
        answer("b", b)

    with caplog.at_level(logging.INFO, logger="bonmoniq.llm"):
        threads = [
            start(threading.Thread(target=answer, args=("a", a))),
            start(threading.Thread(target=second)),
        ]
        for t in threads:
            t.join(120)
    assert got == {"a": alone_a, "b": alone_b}
    order = [name for name, _ in events]
    first_b, last_a = order.index("b"), len(order) - 1 - order[::-1].index("a")
    assert first_b < last_a, f"B waited for the whole of A's answer: {order}"
    assert any("answer paused" in r.getMessage() for r in caplog.records)


# The served model: two streaming clients.

LONG = "Tell me about all your cakes, breads and pastries, and your opening hours."


async def stream(
    client: httpx.AsyncClient,
    url: str,
    question: str,
    *,
    started: asyncio.Event | None = None,
    stop_after: int = 0,
) -> tuple[list[float], str]:
    """One streamed answer: when each piece arrived, and the text (``stop_after`` pieces)."""
    times, text = [], ""
    body = {
        "model": "smollm2",
        "stream": True,
        "max_tokens": 120,
        "temperature": 0.0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
    }
    async with client.stream("POST", f"{url}/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            piece = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if piece:
                times.append(time.monotonic())
                text += piece
                if started is not None:
                    started.set()
                if len(times) == stop_after:
                    break
    return times, text


async def test_the_server_answers_a_second_request_before_the_first_is_done(
    gguf: Path, tmp_path: Path
) -> None:
    log = tmp_path / "llm.log"
    with EmbeddedLLMServer(gguf, "smollm2", log) as endpoint:
        async with httpx.AsyncClient(timeout=120) as client:
            a_started = asyncio.Event()

            async def second() -> tuple[list[float], str]:
                await a_started.wait()
                return await stream(client, endpoint.v1, "Where can I park?")

            (a_times, a_text), (b_times, b_text) = await asyncio.gather(
                stream(client, endpoint.v1, LONG, started=a_started),
                second(),
            )
            assert a_text.strip() and b_text.strip()
            assert b_times[0] < a_times[-1], (a_text, b_text)

            # A client that goes mid-answer, holding the model, does not hold up the next.
            await stream(client, endpoint.v1, "Do you sell birthday cakes?", stop_after=3)
            _, text = await asyncio.wait_for(stream(client, endpoint.v1, "Hello?"), 60)
            assert text.strip()
    assert "answer paused" in log.read_text()


def test_a_request_may_generate_more_than_once(gguf: Path) -> None:
    """A server request's turn outlives each generation in it (a chat handler may call the
    model twice): the second generation gets the model and writes."""
    model = PromptStateLlama(model_path=str(gguf), n_ctx=512, n_threads=2, verbose=False)
    tokens = model.tokenize(chatml(SYSTEM, "Hello?").encode(), special=True)

    def twice() -> list[list[int]]:
        current_turn.set(Turn())
        return [greedy(model, tokens, 4), greedy(model, tokens, 4)]

    first, second = contextvars.copy_context().run(twice)
    assert len(first) == 4 and second == first


async def test_a_request_dropped_while_in_line_never_reads_its_prompt(
    gguf: Path, tmp_path: Path
) -> None:
    """A speculative answer the caller talks over is dropped, maybe while still in line: it
    must not take the model from the requests behind it when its turn comes."""
    log = tmp_path / "llm.log"
    with EmbeddedLLMServer(gguf, "smollm2", log) as endpoint:
        async with httpx.AsyncClient(timeout=120) as client:
            # Digits, commas and spaces have no sentence end: A keeps the model to its end.
            counting = {
                "model": "smollm2",
                "prompt": "1, 2, 3, 4, 5, 6, 7, 8,",
                "stream": True,
                "max_tokens": 64,
                "temperature": 0.0,
                "grammar": "root ::= [0-9, ]+",
            }
            a_started, texts = asyncio.Event(), []

            async def count() -> None:
                async with client.stream("POST", f"{endpoint.v1}/completions", json=counting) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            texts.append(json.loads(line[6:])["choices"][0]["text"])
                            a_started.set()

            async def dropped() -> None:
                await a_started.wait()
                body = {
                    "model": "smollm2",
                    "stream": True,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Are you open today?"}],
                }
                async with client.stream("POST", f"{endpoint.v1}/chat/completions", json=body):
                    until = time.monotonic() + 30
                    while "waits for the model" not in log.read_text():
                        assert time.monotonic() < until, "the request never waited"
                        await asyncio.sleep(0.005)
                # leaving the block closes the connection

            await asyncio.gather(count(), dropped())
            assert len(texts) > 8 and set("".join(texts)) <= set("0123456789, "), texts
            _, text = await asyncio.wait_for(stream(client, endpoint.v1, "Hello?"), 60)
            assert text.strip()
    prompts = re.findall(r"prompt of (\d+) tokens", log.read_text())
    assert len(prompts) == 2, prompts  # the counting and "Hello?", never the dropped one
