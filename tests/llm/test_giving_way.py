"""The rest of an answer gives way to work callers wait for in the platform.

The platform counts its urgent work (Whisper decodes, first chunks being synthesized) on an
``UrgencyBoard`` that its embedded LLM server reads: the board across processes, the rule for
an answer's first chunk, and the real SmolLM2 model in process with threads.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import llama_cpp
import pytest

from llm import EmbeddedLLMServer
from llm.llama_server import PromptStateLlama
from llm.scheduler import UrgencyBoard, first_chunk_ends
from tests.conftest import REPO
from tests.helpers import SYSTEM, chatml, greedy


def test_the_board_is_shared_with_another_process(tmp_path: Path) -> None:
    board = UrgencyBoard(tmp_path / "run" / "urgent", create=True)
    assert board.get() == 0
    board.set(3)
    read = (
        "import sys; from pathlib import Path; from llm.scheduler import UrgencyBoard; "
        "b = UrgencyBoard(Path(sys.argv[1])); print(b.get()); b.set(0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", read, str(board.path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"  # what this process wrote
    assert board.get() == 0  # what the other process wrote


def test_the_server_finds_the_board_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BONMONIQ_LLM_URGENCY_FILE", raising=False)
    assert UrgencyBoard.from_env() is None  # a server run alone waits for nothing
    monkeypatch.setenv("BONMONIQ_LLM_URGENCY_FILE", str(tmp_path / "missing"))
    assert UrgencyBoard.from_env() is None
    (tmp_path / "short").write_bytes(b"")
    monkeypatch.setenv("BONMONIQ_LLM_URGENCY_FILE", str(tmp_path / "short"))
    assert UrgencyBoard.from_env() is None  # not a board: the server runs without one
    UrgencyBoard(tmp_path / "urgent", create=True).set(2)
    monkeypatch.setenv("BONMONIQ_LLM_URGENCY_FILE", str(tmp_path / "urgent"))
    found = UrgencyBoard.from_env()
    assert found is not None and found.get() == 2


@pytest.mark.parametrize(
    ("before", "piece", "ends"),
    [
        ("Yes,", " we", True),  # the TTS speaks "Yes," alone
        ("Yes", ",", False),
        ("We open at 7.", " On", True),
        ("We open at 7:", " Monday", True),
        ("It costs 1", ",000", False),
        ("Sure", " thing", False),
    ],
)
def test_an_answers_first_chunk_ends_as_the_tts_cuts_it(
    before: str, piece: str, ends: bool
) -> None:
    assert first_chunk_ends(before, piece) is ends


def first_chunk(model: llama_cpp.Llama, tokens: list[int]) -> int:
    """How many tokens of ``tokens`` (an answer) come before its second chunk starts."""
    for i in range(1, len(tokens)):
        before = model.detokenize(tokens[:i]).decode(errors="ignore")
        if first_chunk_ends(before, model.detokenize([tokens[i]]).decode(errors="ignore")):
            return i
    raise AssertionError(f"no second chunk in {model.detokenize(tokens)!r}")


def until(condition, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.fixture(scope="module")
def models(gguf: Path) -> tuple[PromptStateLlama, llama_cpp.Llama]:  # noqa: F811
    shared = PromptStateLlama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    plain = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, n_threads=2, verbose=False)
    return shared, plain


N = 40
A = "Do you sell birthday cakes?"
B = "Are you open on Sunday?"


def test_the_rest_of_an_answer_waits_while_a_caller_waits(
    models: tuple[PromptStateLlama, llama_cpp.Llama],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With urgent work on the board, the answer writes its first chunk and then nothing more
    until the board is clear; the answer is token for token a plain llama.cpp model's."""
    shared, plain = models
    a = plain.tokenize(chatml(SYSTEM, A).encode(), special=True)
    alone = greedy(plain, a, N)
    k = first_chunk(plain, alone)
    shared.board = board = UrgencyBoard(tmp_path / "urgent", create=True)
    shared.give_way_limit_s = 120  # the order of events, not a time, decides below
    board.set(1)
    got: list[int] = []

    def answer() -> None:
        for token in shared.generate(a, temp=0.0):
            got.append(token)
            if len(got) == N:
                break

    try:
        with caplog.at_level(logging.INFO, logger="bonmoniq.llm"):
            t = threading.Thread(target=answer, daemon=True)
            t.start()
            until(lambda: len(got) > k)  # the first chunk, and the token that ends it
            time.sleep(0.3)  # ... and not one more while the board shows urgent work
            assert len(got) == k + 1, f"wrote on while a caller waited: {len(got)} of {k + 1}"
            board.set(0)
            t.join(120)
    finally:
        board.set(0)
        shared.board = None
    assert got == alone
    assert any("answer gave way" in r.getMessage() for r in caplog.records)


def test_a_new_request_ends_the_wait_and_goes_first(
    models: tuple[PromptStateLlama, llama_cpp.Llama], tmp_path: Path
) -> None:
    """A gives way after its first chunk; B comes in line: a caller waits for B's first token,
    so A stops waiting and B gets the model while the board still shows urgent work. Both
    answers are a plain llama.cpp model's."""
    shared, plain = models
    a = plain.tokenize(chatml(SYSTEM, A).encode(), special=True)
    b = plain.tokenize(chatml(SYSTEM, B).encode(), special=True)
    alone_a, alone_b = greedy(plain, a, N), greedy(plain, b, N)
    k = first_chunk(plain, alone_a)
    shared.board = board = UrgencyBoard(tmp_path / "urgent", create=True)
    shared.give_way_limit_s = 120
    board.set(1)
    got: dict[str, list[int]] = {"a": [], "b": []}
    order: list[str] = []

    def answer(name: str, tokens: list[int]) -> None:
        for token in shared.generate(tokens, temp=0.0):
            got[name].append(token)
            order.append(name)
            if len(got[name]) == N:
                break

    try:
        ta = threading.Thread(target=answer, args=("a", a), daemon=True)
        ta.start()
        until(lambda: len(got["a"]) > k)  # A is giving way
        tb = threading.Thread(target=answer, args=("b", b), daemon=True)
        tb.start()
        until(lambda: len(got["b"]) > 0)
        assert got["b"] and len(got["a"]) < N, "B waited for A although a caller waited for B"
        assert board.get() == 1  # B went first while the urgent work still ran
        board.set(0)
        for t in (ta, tb):
            t.join(120)
    finally:
        board.set(0)
        shared.board = None
    assert got == {"a": alone_a, "b": alone_b}
    assert order.index("b") < len(order) - 1 - order[::-1].index("a")


def test_the_served_model_reads_the_board_it_is_given(gguf: Path, tmp_path: Path) -> None:  # noqa: F811
    """The server started with the platform's board (as ``bonmoniq serve`` starts it) gives way
    while it shows urgent work, and not when it shows none."""
    board = UrgencyBoard(tmp_path / "run" / "urgent", create=True)
    server = EmbeddedLLMServer(gguf, "m", tmp_path / "llm.log", urgency_file=board.path)
    ask = {
        "model": "m",
        "max_tokens": 40,
        "temperature": 0.0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": A}],
    }

    def gave_way() -> int:
        return (tmp_path / "llm.log").read_text().count("answer gave way")

    with server as endpoint:
        httpx.post(f"{endpoint.v1}/chat/completions", json=ask, timeout=60).raise_for_status()
        assert gave_way() == 0  # nothing urgent
        board.set(1)  # a decode that does not end: the answer waits its most, then goes on
        answer = httpx.post(f"{endpoint.v1}/chat/completions", json=ask, timeout=60)
        assert answer.json()["choices"][0]["message"]["content"].strip()
        assert gave_way() == 1
