"""Language per call: Whisper detects the caller's language, the call's language is fixed once.

Real Whisper (base, CPU) on real speech over G.711: English from Piper, French from espeak-ng.
"""

from __future__ import annotations

import audioop

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from tests.helpers import pause, say, say_in, stt_frames
from voice.engines import PHONE_RATE, Engines
from voice.language import AUTO, CallLanguage, opening_language
from voice.phrasebook import LANGUAGES
from voice.phrases import refuses_recording, says_goodbye
from voice.processors import LanguageSwitch, is_closing
from voice.services import SharedSileroVAD, SharedWhisperSTT, TrimmedWhisper
from voice.session import STT_RATE
from voice.settings import CallSettings

#: Short, common words: what Whisper base hears of espeak-ng's French through 8 kHz.
FRENCH = "Bonjour je voudrais un rendez-vous demain."
ENGLISH = "What time do you open on Saturday?"


def line(pcm8k: bytes) -> np.ndarray:
    """8 kHz PCM through G.711 and up to Whisper's 16 kHz."""
    pcm = audioop.ulaw2lin(audioop.lin2ulaw(pcm8k, 2), 2)
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    return soxr.resample(audio, PHONE_RATE, STT_RATE).astype(np.float32)


def heard_words(text: str) -> set[str]:
    return {w.strip(",.?!'").lower() for w in text.split()}


def test_english_is_detected_and_transcribed(voice, whisper) -> None:  # type: ignore[no-untyped-def]
    [segment], found = TrimmedWhisper(whisper).transcribe(
        line(say(voice, ENGLISH)), detect=LANGUAGES
    )
    assert found is not None and found.language == "en", found
    assert 0.5 < found.probability <= 1.0
    assert {"time", "open", "saturday"} <= heard_words(segment.text), segment.text


def test_french_is_detected_and_transcribed_in_french(whisper) -> None:  # type: ignore[no-untyped-def]
    [segment], found = TrimmedWhisper(whisper).transcribe(
        line(say_in("fr", FRENCH)), detect=LANGUAGES
    )
    assert found is not None and found.language == "fr", found
    assert {"voudrais", "demain"} <= heard_words(segment.text), segment.text


def test_detection_is_restricted_to_the_languages_asked(whisper) -> None:  # type: ignore[no-untyped-def]
    _, found = TrimmedWhisper(whisper).transcribe(line(say_in("fr", FRENCH)), detect={"en", "de"})
    assert found is not None and found.language in {"en", "de"}


def test_without_detection_the_language_is_the_one_given(voice, whisper) -> None:  # type: ignore[no-untyped-def]
    [segment], found = TrimmedWhisper(whisper).transcribe(line(say(voice, ENGLISH)), language="en")
    assert found is None
    assert "saturday" in heard_words(segment.text)


# -- the call's language --------------------------------------------------------------


def test_a_fixed_agent_call_keeps_its_language() -> None:
    call = CallLanguage("fr", "+14155550100")
    assert (call.code, call.opening, call.detecting) == ("fr", "fr", False)
    assert not call.fix("en")
    assert call.code == "fr"


@pytest.mark.parametrize(
    ("number", "language"),
    [
        ("+33612345678", "fr"),
        ("+262262123456", "fr"),
        ("+3225551234", "fr"),
        ("+4930123456", "de"),
        ("+41441234567", "de"),
        ("+34912345678", "es"),
        ("+390612345678", "it"),
        ("+31201234567", "nl"),
        ("+442071234567", "en"),
        ("+14155550100", "en"),
        (None, "en"),
    ],
)
def test_an_auto_call_opens_in_the_language_of_the_country_dialled(
    number: str | None, language: str
) -> None:
    assert opening_language(number) == language
    call = CallLanguage(AUTO, number)
    assert (call.code, call.opening, call.detecting) == (language, language, True)


def test_detection_fixes_the_language_once_and_tells_the_listeners() -> None:
    call = CallLanguage(AUTO, "+33612345678")
    told: list[tuple[str, float | None]] = []
    call.on_fix(lambda c: told.append((c.code, c.probability)))
    assert call.fix("en", 0.9)
    assert not call.fix("de", 0.99)
    assert (call.code, call.detecting, call.switched) == ("en", False, True)
    assert told == [("en", 0.9)]


def test_a_language_without_a_table_keeps_the_opening_one() -> None:
    call = CallLanguage(AUTO, "+33612345678")
    assert call.fix("ja", 0.8)
    assert call.code == "fr" and not call.switched


def test_a_failing_listener_does_not_keep_the_others_uninformed() -> None:
    call = CallLanguage(AUTO, None)
    told: list[str] = []

    def broken(_: CallLanguage) -> None:
        raise RuntimeError("listener failed")

    call.on_fix(broken)
    call.on_fix(lambda c: told.append(c.code))
    assert call.fix("fr")
    assert told == ["fr"]


def test_the_detectors_read_the_call_language_when_they_check() -> None:
    """Until the language is fixed, an objection in any language counts (speech from before
    the announcement had played reaches the refusal check then); once fixed, the detectors
    read the call's language and English."""
    call = CallLanguage(AUTO, "+14155550100")
    assert refuses_recording("Je ne veux pas être enregistré.", call)
    assert refuses_recording("Ich möchte nicht aufgenommen werden.", call)
    call.fix("fr", 0.9)
    assert refuses_recording("Je ne veux pas être enregistré.", call)
    assert refuses_recording("Please don't record this.", call)
    assert says_goodbye("Merci, au revoir.", call)
    assert not says_goodbye("Auf Wiedersehen.", call)
    assert is_closing("Au revoir !", call)


async def test_a_switch_goes_ahead_of_the_transcription_that_fixed_the_language() -> None:
    """The model's new instruction and the announcement reach the rest of the pipeline before
    the caller's first words (and only once, only when the language changed)."""
    call = CallLanguage(AUTO, "+14155550100")
    switch = LanguageSwitch(call, lambda code: [TTSSpeakFrame(f"announcement in {code}")])

    def heard(text: str) -> TranscriptionFrame:
        return TranscriptionFrame(text, "", "2026-11-30T00:00:00Z")

    class Fix(FrameProcessor):  # the STT's part: fix the language, then pass the words on
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                call.fix("fr", 0.9)
            await self.push_frame(frame, direction)

    down, _ = await run_test(
        Pipeline([Fix(), switch]),
        frames_to_send=[heard("bonjour"), heard("merci")],
        expected_down_frames=[TTSSpeakFrame, TranscriptionFrame, TranscriptionFrame],
    )
    assert down[0].text == "announcement in fr"
    assert [f.text for f in down[1:]] == ["bonjour", "merci"]

    same = CallLanguage(AUTO, "+14155550100")
    unchanged = LanguageSwitch(same, lambda code: [TTSSpeakFrame(code)])
    same.fix("en", 0.9)
    await run_test(
        unchanged, frames_to_send=[heard("hello")], expected_down_frames=[TranscriptionFrame]
    )


# -- the STT service of an auto call ------------------------------------------------------


async def transcripts(
    engines: Engines, call: CallLanguage, pcm8k: bytes, heard_from: int | None = 0
) -> list[TranscriptionFrame]:
    vad = SharedSileroVAD(engines.silero, CallSettings().vad_params())
    stt = SharedWhisperSTT(engines, call, vad=vad, heard_from=lambda: heard_from)
    down, _ = await run_test(
        Pipeline([VADProcessor(vad_analyzer=vad), stt]),
        frames_to_send=[*await stt_frames(pcm8k), SleepFrame(sleep=4.0)],
        pipeline_params=PipelineParams(audio_in_sample_rate=STT_RATE),
    )
    return [f for f in down if isinstance(f, TranscriptionFrame)]


async def test_the_first_utterance_fixes_the_call_language(engines: Engines, voice) -> None:  # type: ignore[no-untyped-def]
    """An auto call on an English number hears French: it is decoded in French and the call's
    language is French from then on; the next (English) utterance is decoded in French too."""
    call = CallLanguage(AUTO, "+442071234567")
    audio = pause(0.3) + say_in("fr", FRENCH) + pause(1.5) + say(voice, ENGLISH) + pause(1.5)
    frames = await transcripts(engines, call, audio)
    assert (call.code, call.detecting) == ("fr", False)
    assert call.probability is not None and 0.5 < call.probability <= 1.0
    assert len(frames) == 2, [(f.text, str(f.language)) for f in frames]
    assert [str(f.language) for f in frames] == ["fr", "fr"]
    assert frames[0].text.strip()


async def test_words_before_the_announcement_played_fix_nothing(engines: Engines) -> None:
    """Said while the announcement plays (not heard yet): never transcribed, and the call's
    language is still to be detected."""
    call = CallLanguage(AUTO, "+442071234567")
    frames = await transcripts(engines, call, pause(0.3) + say_in("fr", FRENCH) + pause(1.5), None)
    assert frames == []
    assert (call.code, call.detecting) == ("en", True)
