"""Work a caller waits for goes first: the rest of an answer gives way to Whisper decodes.

With threads and no model (the order of events), then the real Whisper and Piper.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY

from carriers.simulation import trim_silence
from voice.engines import Urgency, synthesize
from voice.services import SharedTTS, TrimmedWhisper


def gave_way() -> float:
    return REGISTRY.get_sample_value("bonmoniq_tts_gave_way_total") or 0.0


def test_nothing_urgent_no_wait() -> None:
    urgency = Urgency()
    before = gave_way()
    assert urgency.give_way() == 0.0
    assert gave_way() == before  # counted only when it waited


def test_giving_way_waits_for_the_urgent_work_running_then_only() -> None:
    urgency = Urgency()
    events: list[str] = []
    first_in, first_go, later_in, later_go = (threading.Event() for _ in range(4))

    def urgent(started: threading.Event, go: threading.Event, name: str) -> None:
        with urgency.urgent():
            started.set()
            go.wait(10)
            events.append(f"{name} done")

    def rest() -> None:
        urgency.give_way(limit_s=10)
        events.append("rest")

    first = threading.Thread(target=urgent, args=(first_in, first_go, "first"))
    first.start()
    first_in.wait(10)
    giver = threading.Thread(target=rest)
    giver.start()
    # Urgent work that starts after the rest began to wait does not hold it up again.
    later = threading.Thread(target=urgent, args=(later_in, later_go, "later"))
    later.start()
    later_in.wait(10)
    assert urgency.running == 2 and events == []
    before = gave_way()
    first_go.set()
    giver.join(10)
    assert events == ["first done", "rest"]
    assert gave_way() == before + 1
    later_go.set()
    for t in (first, later):
        t.join(10)
    assert events == ["first done", "rest", "later done"] and urgency.running == 0


def test_giving_way_has_a_limit() -> None:
    urgency = Urgency()
    stuck, release = threading.Event(), threading.Event()

    def urgent() -> None:
        with urgency.urgent():
            stuck.set()
            release.wait(10)

    t = threading.Thread(target=urgent)
    t.start()
    stuck.wait(10)
    waited = urgency.give_way(limit_s=0.05)
    assert urgency.running == 1  # it returned while the urgent work still ran
    assert waited > 0
    release.set()
    t.join(10)


def test_the_count_is_shown_on_the_board_the_llm_server_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from llm.scheduler import UrgencyBoard

    board = UrgencyBoard(tmp_path / "urgent", create=True)
    board.set(5)  # left over from a process that died mid-decode
    urgency = Urgency(board)
    assert board.get() == 0
    with urgency.urgent():
        with urgency.urgent():
            assert board.get() == 2
        assert board.get() == 1
    assert board.get() == 0


def test_an_urgent_job_that_fails_is_no_longer_running() -> None:
    urgency = Urgency()
    with pytest.raises(RuntimeError), urgency.urgent():
        raise RuntimeError("decode failed")
    assert urgency.running == 0 and urgency.give_way() == 0.0


@pytest.fixture(scope="module")
def engines(voices, whisper):  # type: ignore[no-untyped-def]
    """The shared speech engines (no VAD or LLM: nothing here needs them)."""
    from voice.engines import Engines

    return Engines(whisper, voices, None, llm=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("leading", [False, True], ids=["rest-of-answer", "first-chunk"])
async def test_the_rest_of_an_answer_is_synthesized_after_a_decode_running(
    engines, voice, leading: bool
) -> None:  # type: ignore[no-untyped-def]
    """A real Whisper decode of a real question, and a real Piper chunk asked for meanwhile.

    The rest of an answer starts once the decode has finished; the first chunk of an answer is
    urgent itself and never waits.
    """
    import asyncio

    question = trim_silence(synthesize(voice, "Do you deliver birthday cakes on Sundays?", 16000))
    audio = np.frombuffer(question, dtype=np.int16).astype(np.float32) / 32768.0
    stt = TrimmedWhisper(engines.whisper)
    events: list[str] = []
    decoding = threading.Event()

    def decode() -> str:
        with engines.urgency.urgent():
            decoding.set()
            text = " ".join(s.text for s in stt.transcribe(audio, language="en")[0])
            events.append("decoded")
            return text

    tts = SharedTTS(engines)
    before = gave_way()
    loop = asyncio.get_running_loop()
    decoded = loop.run_in_executor(None, decode)
    await asyncio.to_thread(decoding.wait, 10)
    chunks = tts._synthesized(await tts._current(), "We deliver on Sundays until noon.", leading)
    audio_out = b"".join([chunk async for chunk in chunks])
    events.append("synthesized")
    text = await decoded
    assert "cakes" in text.lower() and len(audio_out) > 16000  # both did their real work
    if leading:
        assert gave_way() == before  # it never waited
    else:
        assert events == ["decoded", "synthesized"] and gave_way() > before
    assert engines.urgency.running == 0
