"""Small pipeline processors of a call: the announcement and the closing phrase."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    Frame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

#: What a caller or agent says to end a call.
CLOSING_PHRASE = re.compile(
    r"\b(good[\s-]?bye|bye[\s-]?bye|bye|hang up now|that'?s all,? thanks?)\b", re.IGNORECASE
)
_CHUNK_MS = 20


def is_closing(text: str) -> bool:
    """Whether ``text`` says goodbye."""
    return bool(CLOSING_PHRASE.search(text))


class Announcer(FrameProcessor):
    """Plays the announcement before anything else and reports when it has played.

    Sits between TTS and the output transport. "Played" is the output transport's
    ``BotStoppedSpeakingFrame`` after the last announcement chunk: measured where the audio
    leaves for the caller, not assumed from the length of the clip.
    """

    def __init__(
        self,
        audio: bytes,
        sample_rate: int,
        on_started: Callable[[], Awaitable[None]],
        on_played: Callable[[], Awaitable[None]],
    ) -> None:
        """Announce ``audio`` (16-bit mono PCM at ``sample_rate``)."""
        super().__init__()
        self._audio = audio
        self._rate = sample_rate
        self._on_started = on_started
        self._on_played = on_played
        self._playing = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Start the announcement after StartFrame; watch for its end."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._playing = True
            await self._on_started()
            # Framed as TTS output so the transport reports bot speech for it; it carries no
            # text, so the announcement never enters the LLM context or the transcript.
            context_id = "announcement"
            await self.push_frame(TTSStartedFrame(context_id=context_id, append_to_context=False))
            step = self._rate * 2 * _CHUNK_MS // 1000
            for i in range(0, len(self._audio), step):
                chunk = self._audio[i : i + step]
                await self.push_frame(TTSAudioRawFrame(chunk, self._rate, 1, context_id=context_id))
            await self.push_frame(TTSStoppedFrame(context_id=context_id))
        elif isinstance(frame, BotStoppedSpeakingFrame) and self._playing:
            self._playing = False
            await self._on_played()


class ClosingPhrases(FrameProcessor):
    """Between STT and the user aggregator: a caller's goodbye ends the call, not the LLM."""

    def __init__(self, on_goodbye: Callable[[str], Awaitable[None]]) -> None:
        """Call ``on_goodbye(text)`` instead of passing a goodbye on to the LLM."""
        super().__init__()
        self._on_goodbye = on_goodbye
        self._done = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Swallow a goodbye transcription."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and is_closing(frame.text):
            if not self._done:
                self._done = True
                await self._on_goodbye(frame.text.strip())
            return
        await self.push_frame(frame, direction)
