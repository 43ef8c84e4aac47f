"""A caller may object at any time, even while the announcement still plays.

On the real Silero VAD and Whisper: speech from before the point where the announcement had
played is never transcribed (tests/voice/test_consent_edges.py), but it still reaches the
refusal check, in memory, and nothing of it goes further down the pipeline (to the closing
phrase check, the user aggregator, the LLM context, the transcript).
"""

from __future__ import annotations

import pytest
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.tests.utils import SleepFrame, run_test

from tests.helpers import FRAME, UP, pause, say, stt_frames
from voice.engines import Engines
from voice.recorder import ConsentGate, RefusalPhrases, UnheardSpeechFrame
from voice.services import SharedSileroVAD, SharedWhisperSTT
from voice.session import STT_RATE
from voice.settings import CallSettings

REFUSAL = "Please don't record this."
EARLY = pytest.mark.parametrize("early_stt", [True, False], ids=["early-stt", "no-early-stt"])


async def through_refusal_check(
    engines: Engines, pcm8k: bytes, heard_from: int | None, early_stt: bool
) -> tuple[ConsentGate, list[str], list[Frame]]:
    """Run ``pcm8k`` through VAD, STT and the refusal check as a call's pipeline does.

    Returns the gate, how the caller objected, and every frame past the refusal check.
    """
    objections: list[str] = []

    async def objected(how: str) -> None:
        objections.append(how)

    gate = ConsentGate(objected)
    vad = SharedSileroVAD(engines.silero, CallSettings().vad_params())
    stt = SharedWhisperSTT(
        engines, "en", vad=vad if early_stt else None, heard_from=lambda: heard_from
    )
    down, _ = await run_test(
        Pipeline([VADProcessor(vad_analyzer=vad), stt, RefusalPhrases(gate)]),
        frames_to_send=[*await stt_frames(pcm8k), SleepFrame(sleep=4.0)],
        pipeline_params=PipelineParams(audio_in_sample_rate=STT_RATE),
    )
    return gate, objections, down


def words(frames: list[Frame]) -> set[str]:
    """The words of every transcription among ``frames``."""
    text = " ".join(f.text for f in frames if isinstance(f, TranscriptionFrame)).lower()
    return set(text.replace(".", " ").replace(",", " ").replace("?", " ").split())


@EARLY
async def test_an_objection_said_during_the_announcement_closes_the_gate_for_good(
    engines: Engines, voice: object, early_stt: bool
) -> None:
    """Said and ended while the announcement plays: the objection counts, and nothing of
    the words passes the refusal check (no transcription, no in-memory text)."""
    line = pause(0.5) + say(voice, REFUSAL) + pause(1.5)
    gate, objections, down = await through_refusal_check(engines, line, None, early_stt)
    assert gate.objected and objections == ["spoken"]
    assert not [f for f in down if isinstance(f, TranscriptionFrame | UnheardSpeechFrame)], down
    gate.open(0)  # the announcement has played by now: the gate stays closed for good
    assert not gate.is_open


async def test_an_objection_before_the_announcement_played_is_not_transcribed_with_the_rest(
    engines: Engines, voice: object
) -> None:
    """An utterance that starts with the objection during the announcement and goes on after
    it: the objection counts, and only the part after the announcement is transcribed."""
    before = pause(0.5) + say(voice, REFUSAL)
    after = say(voice, "Do you bake sourdough bread on Sundays?")
    heard = (len(before) + FRAME) * UP
    gate, objections, down = await through_refusal_check(
        engines, before + after + pause(1.5), heard, True
    )
    assert gate.objected and objections == ["spoken"]
    said = words(down)
    assert not {"record", "recording", "don't", "please"} & said, said
    assert {"sourdough", "bread"} & said, said
    assert not [f for f in down if isinstance(f, UnheardSpeechFrame)]


async def test_other_words_said_during_the_announcement_object_to_nothing(
    engines: Engines, voice: object
) -> None:
    """Only a refusal objects: other speech during the announcement changes nothing."""
    line = pause(0.5) + say(voice, "Hello, is this the bakery?") + pause(1.5)
    gate, objections, down = await through_refusal_check(engines, line, None, True)
    assert not gate.objected and objections == []
    assert not [f for f in down if isinstance(f, TranscriptionFrame | UnheardSpeechFrame)]
    gate.open(0)
    assert gate.is_open
