"""A caller turn's stage latencies, with the times passed in."""

from __future__ import annotations

import pytest

from voice.metrics import STAGE_SECONDS, STAGES, TurnTimeline


def observed(stage: str) -> tuple[float, float]:
    """(count, sum) of a stage in the process's registry."""
    samples = {(s.name, s.labels.get("stage")): s.value for s in STAGE_SECONDS.collect()[0].samples}
    count = samples.get(("bonmoniq_pipeline_stage_seconds_count", stage), 0.0)
    return count, samples.get(("bonmoniq_pipeline_stage_seconds_sum", stage), 0.0)


def test_stages_partition_the_turn_and_are_observed() -> None:
    t = TurnTimeline()
    before = {s: observed(s) for s in (*STAGES, "response")}
    t.speech_ended(10.4, 0.4)
    for stage, at in [
        ("stt", 10.7),
        ("turn_end", 10.75),
        ("llm_first_token", 10.9),
        ("first_sentence", 11.1),
        ("tts_first_audio", 11.4),
    ]:
        t.mark(stage, at)
    t.mark("stt", 12.0)  # a second transcript: the first one counts
    out = t.answered(11.45)
    assert out is not None
    assert out == pytest.approx(
        {
            "vad": 0.4,
            "stt": 0.3,
            "turn_end": 0.05,
            "llm_first_token": 0.15,
            "first_sentence": 0.2,
            "tts_first_audio": 0.3,
            "transport": 0.05,
            "response": 1.45,
        }
    )
    for stage, seconds in out.items():
        count, total = observed(stage)
        assert count == before[stage][0] + 1 and total == pytest.approx(before[stage][1] + seconds)
    assert t.answered(12.0) is None  # answered once; the next turn starts at the next VAD stop


def test_missing_marks_fold_into_the_next_stage_and_restarts_reset() -> None:
    t = TurnTimeline()
    t.mark("stt", 1.0)  # outside a turn: ignored
    t.speech_ended(5.0, 0.4)
    t.mark("stt", 5.2)
    t.speech_ended(6.0, 0.4)  # the caller went on talking: the turn starts again
    t.mark("stt", 6.3)
    t.speech_ended(6.0, 0.4)  # the same report at the next hop of the pipeline: no restart
    t.mark("first_sentence", 6.5)  # a cached phrase: no LLM
    out = t.answered(6.9)
    assert out == pytest.approx(
        {"vad": 0.4, "stt": 0.3, "first_sentence": 0.2, "transport": 0.4, "response": 1.3}
    )
    assert sum(v for k, v in out.items() if k != "response") == pytest.approx(out["response"])


def test_a_stage_is_awaited_only_inside_a_turn_until_it_ends() -> None:
    t = TurnTimeline()
    assert not t.awaits("first_sentence")  # no turn: the greeting, say, is nobody's wait
    t.speech_ended(5.0, 0.25)
    assert t.awaits("first_sentence")  # the answer's first chunk: the caller waits for it
    t.mark("first_sentence", 5.6)
    assert not t.awaits("first_sentence")  # the rest of the answer
    t.answered(5.9)
    assert not t.awaits("first_sentence")
