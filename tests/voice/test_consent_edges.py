"""Consent-gate edges on real parts: what the caller said before the announcement had played.

The STT service on the real Silero VAD and Whisper transcribes only the caller's audio from
the point where the announcement had played; the gate lets caller audio through from that
point of the stream, even audio from before it still on its way through the pipeline.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.tests.utils import SleepFrame, run_test

from carriers.playback import STREAM_OFFSET, PlaybackMarkFrame
from carriers.twilio.media import TwilioMediaCodec
from carriers.twilio.simulator import TwilioWire
from tests.helpers import FRAME, UP, pause, say, stt_frames
from voice.engines import PHONE_RATE, Engines
from voice.processors import ANNOUNCEMENT_MARK, Announcer
from voice.recorder import ConsentGate
from voice.services import SharedSileroVAD, SharedWhisperSTT
from voice.session import STT_RATE
from voice.settings import CallSettings


async def transcribe(engines: Engines, pcm8k: bytes, heard_from: int | None) -> list[str]:
    vad = SharedSileroVAD(engines.silero, CallSettings().vad_params())
    stt = SharedWhisperSTT(engines, "en", vad=vad, heard_from=lambda: heard_from)
    down, _ = await run_test(
        Pipeline([VADProcessor(vad_analyzer=vad), stt]),
        frames_to_send=[*await stt_frames(pcm8k), SleepFrame(sleep=4.0)],
        pipeline_params=PipelineParams(audio_in_sample_rate=STT_RATE),
    )
    return [f.text.lower() for f in down if isinstance(f, TranscriptionFrame)]


async def test_words_said_before_the_announcement_played_are_not_transcribed(
    engines: Engines, voice: object
) -> None:
    """One utterance, started during the announcement and ended after it: only its part
    after the point where the announcement had played is transcribed."""
    before = pause(0.5) + say(voice, "My card number is four two seven nine.")
    after = say(voice, "Do you bake sourdough bread on Sundays?")
    texts = await transcribe(engines, before + after + pause(1.5), len(before) * UP)
    said = " ".join(texts)
    assert not {"card", "number", "four", "seven"} & set(said.replace(".", " ").split()), texts
    assert {"sourdough", "bread"} & set(said.replace("?", " ").split()), texts


async def test_an_utterance_over_before_the_announcement_played_is_dropped(
    engines: Engines, voice: object
) -> None:
    """Said and ended during the announcement: nothing of it is transcribed, neither while
    the announcement plays nor once it has (the VAD's end of speech comes after)."""
    line = pause(0.5) + say(voice, "My card number is four two seven nine.")
    assert await transcribe(engines, line + pause(1.5), None) == []
    assert await transcribe(engines, line + pause(1.5), (len(line) + FRAME) * UP) == []


async def test_the_gate_passes_caller_audio_from_its_opening_point_only() -> None:
    """The gate opens at byte N of the caller's stream while audio from before N is still
    on its way to it: that audio is dropped, the frame holding N is cut, agent audio passes."""
    gate = ConsentGate(lambda how: _nothing())
    frames = [
        InputAudioRawFrame(audio=bytes([n]) * 640, sample_rate=STT_RATE, num_channels=1)
        for n in range(1, 6)
    ]
    opening = 640 * 2 + 100  # inside the third frame
    gate.open(at_input=opening)
    agent = OutputAudioRawFrame(audio=b"\x07" * 320, sample_rate=PHONE_RATE, num_channels=1)
    down, _ = await run_test(gate, frames_to_send=[*frames, agent])
    passed = b"".join(f.audio for f in down if isinstance(f, InputAudioRawFrame))
    assert passed == bytes([3]) * (640 - 100) + bytes([4]) * 640 + bytes([5]) * 640
    assert any(isinstance(f, OutputAudioRawFrame) and f.audio == agent.audio for f in down)


async def test_the_gate_follows_the_codec_stamps_when_frames_were_dropped_upstream() -> None:
    """A muted user aggregator drops the caller's frames during the announcement: the gate
    places each frame by the codec's stamp, not by counting what reached it."""
    codec = TwilioMediaCodec("MZ" + "0" * 32)
    await codec.setup(SimpleNamespace(audio_in_sample_rate=STT_RATE))  # type: ignore[arg-type]
    wire = TwilioWire(codec.stream_sid)
    frames = [await codec.deserialize(wire.encode(bytes([0, n]) * 160)) for n in range(1, 31)]
    sent = [f for f in frames if isinstance(f, InputAudioRawFrame)]
    gate = ConsentGate(lambda how: _nothing())
    gate.open(at_input=sent[5].metadata[STREAM_OFFSET])
    down, _ = await run_test(gate, frames_to_send=sent[4:])  # the first four were dropped
    passed = [f for f in down if isinstance(f, InputAudioRawFrame)]
    assert [f.audio for f in passed] == [f.audio for f in sent[5:]]


async def test_a_closed_gate_passes_no_audio() -> None:
    gate = ConsentGate(lambda how: _nothing())
    frame = InputAudioRawFrame(audio=b"\x01" * 640, sample_rate=STT_RATE, num_channels=1)
    down, _ = await run_test(gate, frames_to_send=[frame])
    assert not [f for f in down if isinstance(f, InputAudioRawFrame)]


async def test_the_announcement_is_followed_by_its_playback_mark() -> None:
    """The mark comes after the last chunk and after TTSStoppedFrame (which flushes the
    transport's partial chunk), so a carrier acknowledges it once all of it has played."""
    audio = b"\x01\x00" * (PHONE_RATE // 2)  # 0.5 s

    async def nothing(*_: object) -> None:
        return None

    announcer = Announcer(audio, PHONE_RATE, nothing, nothing)
    assert announcer.duration_s == pytest.approx(0.5)
    down, _ = await run_test(announcer, frames_to_send=[])
    kinds = [type(f) for f in down]
    mark = kinds.index(PlaybackMarkFrame)
    assert mark > kinds.index(TTSStoppedFrame)
    assert mark > max(i for i, k in enumerate(kinds) if k is TTSAudioRawFrame)
    assert down[mark].message == ANNOUNCEMENT_MARK


async def _nothing() -> None:
    return None
