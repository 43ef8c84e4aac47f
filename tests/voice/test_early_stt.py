"""Early transcription on the real Silero VAD and Whisper, also with the STT lagging behind.

On a loaded machine the STT service can receive its audio in bursts, long after pipecat's VAD
processor analyzed it: the early decode must follow the VAD by position in the audio stream,
not by the VAD's state at the moment a frame reaches the STT.
"""

from __future__ import annotations

import audioop

import pytest
from pipecat.audio.utils import create_stream_resampler, ulaw_to_pcm
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from prometheus_client import REGISTRY

from tests.helpers import FRAME, pause, say
from voice.engines import PHONE_RATE, Engines
from voice.services import SharedSileroVAD, SharedWhisperSTT
from voice.session import STT_RATE
from voice.settings import CallSettings


class Burst(FrameProcessor):
    """Holds the frames (in order) and lets them go ``size`` at a time: a stalled consumer."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._held: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame) or self._size <= 1:
            await self.push_frame(frame, direction)
            return
        self._held.append(frame)
        if len(self._held) >= self._size or isinstance(frame, EndFrame):
            held, self._held = self._held, []
            for f in held:
                await self.push_frame(f, direction)


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("bonmoniq_early_transcripts_total", {"outcome": outcome}) or 0


async def transcripts(
    engines: Engines, pcm8k: bytes, burst: int
) -> tuple[list[str], dict[str, float]]:
    """What the STT service transcribes of ``pcm8k`` sent over μ-law, and the early decodes.

    The STT receives the VAD processor's frames ``burst`` frames at a time.
    """
    before = {o: count(o) for o in ("used", "discarded")}
    resampler = create_stream_resampler()
    audio = bytes(FRAME * 25) + pcm8k + bytes(FRAME * 50)
    frames = []
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        pcm = await ulaw_to_pcm(
            audioop.lin2ulaw(audio[i : i + FRAME], 2), PHONE_RATE, STT_RATE, resampler
        )
        frames.append(InputAudioRawFrame(audio=pcm, sample_rate=STT_RATE, num_channels=1))
    vad = SharedSileroVAD(engines.silero, CallSettings().vad_params())
    stt = SharedWhisperSTT(engines, "en", vad=vad)
    down, _ = await run_test(
        Pipeline([VADProcessor(vad_analyzer=vad), Burst(burst), stt]),
        frames_to_send=[*frames, SleepFrame(sleep=4.0)],
        pipeline_params=PipelineParams(audio_in_sample_rate=STT_RATE),
    )
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    return texts, {o: count(o) - before[o] for o in before}


BURSTS = pytest.mark.parametrize("burst", [1, 25], ids=["in-step", "0.5s-bursts"])


@BURSTS
async def test_a_pause_inside_a_line_discards_the_early_decode(engines, voice, burst) -> None:  # type: ignore[no-untyped-def]
    """0.18 s of silence: the VAD pauses (at every alignment of its windows over the audio)
    but does not end the speech; the decode started at the pause is discarded and the whole
    line is one transcript, taken from the decode started at its end."""
    texts, early = await transcripts(
        engines, say(voice, "Do you sell") + pause(0.18) + say(voice, "birthday cakes?"), burst
    )
    assert len(texts) == 1, texts
    assert {"sell", "birthday", "cakes"} <= set(texts[0].lower().strip("?.").split()), texts
    # Piper sometimes leaves a gap inside a word that the VAD also takes for a pause.
    assert early["used"] == 1 and early["discarded"] >= 1, early


@BURSTS
async def test_an_end_of_speech_uses_the_early_decode(engines, voice, burst) -> None:  # type: ignore[no-untyped-def]
    """0.7 s of silence ends the speech: two transcripts, each from its early decode."""
    texts, early = await transcripts(
        engines,
        say(voice, "What time do you open") + pause(0.7) + say(voice, "on Saturday?"),
        burst,
    )
    assert len(texts) == 2, texts
    assert "open" in texts[0].lower() and "saturday" in texts[1].lower(), texts
    assert early == {"used": 2, "discarded": 0}
