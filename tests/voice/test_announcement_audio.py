"""The announcer never plays an empty announcement, so the consent gate never opens on one."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame
from pipecat.tests.utils import run_test

from carriers.playback import PlaybackMarkFrame
from voice.engines import PHONE_RATE, PhraseCache
from voice.processors import Announcer


async def test_an_announcer_without_audio_reports_an_error_and_never_starts() -> None:
    started: list[str] = []

    async def on_started() -> None:
        started.append("started")

    async def on_sending(_at: float) -> None:
        started.append("sending")

    announcer = Announcer(b"", PHONE_RATE, on_started, on_sending)
    down, up = await run_test(announcer, frames_to_send=[], expected_up_frames=[ErrorFrame])
    assert started == []
    assert not [f for f in down if isinstance(f, TTSAudioRawFrame | PlaybackMarkFrame)]


def test_an_announcement_cannot_be_set_to_nothing() -> None:
    async def nothing(*_: object) -> None:
        return None

    announcer = Announcer(b"", PHONE_RATE, nothing, nothing)
    with pytest.raises(ValueError):
        announcer.audio = b""
    announcer.audio = b"\x01\x00" * PHONE_RATE
    assert announcer.duration_s == pytest.approx(1.0)


def test_a_phrase_cache_that_keeps_nothing_keeps_nothing() -> None:
    """The budget 0 (BONMONIQ_PHRASE_CACHE_MB=0): each call synthesizes its phrases."""
    cache = PhraseCache(0)
    cache.put(("Hello.", PHONE_RATE), b"\x01\x00" * 100)
    assert cache.get(("Hello.", PHONE_RATE)) is None and cache.bytes == 0
