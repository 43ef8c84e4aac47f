"""The voices of a process: the packaged Piper voice and espeak-ng, loaded once and shared."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import soxr

from voice.errors import VoiceError
from voice.phrasebook import LANGUAGES
from voice.services import SharedTTS
from voice.voices import ESPEAK_RATE, EspeakVoice, VoiceInfo, Voices, speak, wav_data

FRENCH = VoiceInfo("espeak-ng-fr", "fr", "espeak-ng")


def test_every_supported_language_has_a_voice(voices: Voices) -> None:
    assert voices.default == "en_US-joe-medium"
    for lang in LANGUAGES:
        assert voices.info(voices.default_for(lang)).language == lang
    assert voices.default_for("en") == "en_US-joe-medium"  # the neural voice before espeak-ng
    assert voices.default_for("fr") == "espeak-ng-fr"
    assert voices.default_for("fr-CA") == "espeak-ng-fr"


def test_a_call_speaks_the_agent_s_voice_only_in_its_language(voices: Voices) -> None:
    assert voices.voice_for("espeak-ng-en", "en") == "espeak-ng-en"
    assert voices.voice_for("en_US-joe-medium", "fr") == "espeak-ng-fr"
    assert voices.voice_for("no-such-voice", "de") == "espeak-ng-de"


def test_a_voice_is_loaded_once_and_shared(voices: Voices) -> None:
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(voices.get("espeak-ng-de")))]
    threads += [threading.Thread(target=lambda: got.append(voices.get("espeak-ng-de")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] is got[1] is voices.get("espeak-ng-de")
    assert "espeak-ng-de" in voices.loaded()


def test_espeak_ng_speaks_french_a_sentence_at_a_time(voices: Voices, whisper: Any) -> None:
    voice = voices.get("espeak-ng-fr")
    chunks = list(voice.chunks("Bonjour. Merci beaucoup, au revoir."))
    assert len(chunks) == 2 and all(len(c) > ESPEAK_RATE // 4 for c in chunks)
    samples = np.frombuffer(speak(voice, "Merci beaucoup, au revoir.", 16000), dtype=np.int16)
    segments, _ = whisper.transcribe(samples.astype(np.float32) / 32768, language="fr")
    assert "revoir" in " ".join(s.text for s in segments).lower()


def test_a_failing_espeak_ng_is_a_voice_error() -> None:
    with pytest.raises(VoiceError, match="status"):
        list(EspeakVoice(FRENCH, (), "/bin/false").chunks("Bonjour."))
    with pytest.raises(VoiceError, match="FileNotFoundError"):
        list(EspeakVoice(FRENCH, (), "/nonexistent/espeak-ng").chunks("Bonjour."))
    with pytest.raises(VoiceError, match="no WAV"):  # echo prints its arguments: not audio
        list(EspeakVoice(FRENCH, (), "/bin/echo").chunks("Bonjour."))


def test_the_words_reach_espeak_ng_on_its_stdin_not_in_its_arguments(tmp_path: Any) -> None:
    """A process's arguments are readable by every user of the host; its stdin is not."""
    seen = tmp_path / "argv"
    fake = tmp_path / "espeak"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {seen}\ncat >/dev/null\nprintf "RIFF....WAVEdata....\\0\\0"\n'
    )
    fake.chmod(0o755)
    list(EspeakVoice(FRENCH, ("-v", "fr"), str(fake)).chunks("Mon numéro est le 06 12 34 56 78."))
    assert seen.read_text().split() == ["-v", "fr", "--stdout"]


def test_wav_data_is_the_samples_after_the_header() -> None:
    assert (
        wav_data(b"RIFF\xff\xff\xff\x7fWAVEfmt " + bytes(16) + b"data\xff\xff\xff\x7f\x01\x02\x03")
        == b"\x01\x02"
    )


async def test_a_call_s_tts_switches_voice_for_the_rest_of_the_call(engines: Any) -> None:
    tts = SharedTTS(engines)
    assert tts.voice == "en_US-joe-medium"
    tts.use_voice("espeak-ng-fr")
    assert tts.voice == "espeak-ng-fr"
    speaker = await tts._current()  # loaded in a worker thread, before the next sentence
    assert speaker.info.name == "espeak-ng-fr"
    audio = b"".join([c async for c in tts._synthesized(speaker, "Bonjour.", True)])
    assert len(audio) > ESPEAK_RATE // 4  # espeak-ng's audio, at its rate
    assert soxr.resample(np.frombuffer(audio, dtype=np.int16), ESPEAK_RATE, 8000).size > 0
    with pytest.raises(KeyError):
        tts.use_voice("no-such-voice")
    assert tts.voice == "espeak-ng-fr"
