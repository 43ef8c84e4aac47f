"""Small pipeline processors of a call: announcement, closing phrase, person, language switch."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    Frame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from carriers.playback import PlaybackMarkFrame
from voice.language import CallLanguage
from voice.phrases import asks_for_person, says_goodbye

_CHUNK_MS = 20
#: The playback mark that follows the announcement's audio.
ANNOUNCEMENT_MARK = "announcement"


def is_closing(text: str, language: str | CallLanguage = "en") -> bool:
    """Whether ``text`` says goodbye (in ``language`` or English: :mod:`voice.phrases`)."""
    return says_goodbye(text, language)


class Announcer(FrameProcessor):
    """Plays the announcement before anything else and reports when it starts leaving.

    Sits between TTS and the output transport. The announcement's audio is followed by a
    playback mark (:mod:`carriers.playback`), which a carrier that acknowledges playback sends
    back once the caller has heard it all. The output transport's ``BotStartedSpeakingFrame``
    tells when the first chunk left: ``on_sending(at)`` (``time.monotonic()``), from which
    the audio cannot have played before ``at + duration_s``. The output transport sends ahead
    of real time, so the last chunk leaving says nothing about what the caller has heard.
    """

    def __init__(
        self,
        audio: bytes,
        sample_rate: int,
        on_started: Callable[[], Awaitable[None]],
        on_sending: Callable[[float], Awaitable[None]],
    ) -> None:
        """Announce ``audio`` (16-bit mono PCM at ``sample_rate``; set later if empty)."""
        super().__init__()
        self._audio = audio
        self._rate = sample_rate
        self._on_started = on_started
        self._on_sending = on_sending
        self._playing = False

    @property
    def audio(self) -> bytes:
        """The announcement's audio (empty until set)."""
        return self._audio

    @audio.setter
    def audio(self, pcm: bytes) -> None:
        """Set the audio before the pipeline starts; an empty announcement is refused."""
        if not pcm:
            raise ValueError("an announcement must have audio")
        self._audio = pcm

    @property
    def duration_s(self) -> float:
        """How long the announcement takes to play."""
        return len(self._audio) / (self._rate * 2)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Start the announcement after StartFrame; watch for its first chunk leaving.

        Without audio the announcement never starts, so the consent gate never opens, and
        the call ends with an apology (an error): no call goes on without its announcement.
        """
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and not self._audio:
            await self.push_error("the announcement has no audio")
        elif isinstance(frame, StartFrame):
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
            # After TTSStoppedFrame, which flushes the transport's last partial chunk.
            await self.push_frame(PlaybackMarkFrame(message=ANNOUNCEMENT_MARK))
        elif isinstance(frame, BotStartedSpeakingFrame) and self._playing:
            self._playing = False
            await self._on_sending(time.monotonic())


class ClosingPhrases(FrameProcessor):
    """Between STT and the user aggregator: a caller's goodbye ends the call, not the LLM."""

    def __init__(
        self, on_goodbye: Callable[[str], Awaitable[None]], language: str | CallLanguage = "en"
    ) -> None:
        """Call ``on_goodbye(text)`` instead of passing a goodbye (in ``language``) to the LLM."""
        super().__init__()
        self._on_goodbye = on_goodbye
        self._language = language
        self._done = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Swallow a goodbye transcription."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and is_closing(frame.text, self._language):
            if not self._done:
                self._done = True
                await self._on_goodbye(frame.text.strip())
            return
        await self.push_frame(frame, direction)


class PersonRequests(FrameProcessor):
    """Between STT and the user aggregator: a caller asking for a person starts a transfer.

    Only while ``enabled()`` (the agent can transfer); otherwise the words go to the model as
    usual. Once ``handed_over()``, nothing the caller says goes further (the person takes over).
    """

    def __init__(
        self,
        language: str | CallLanguage,
        on_request: Callable[[str], Awaitable[None]],
        enabled: Callable[[], bool],
        handed_over: Callable[[], bool],
    ) -> None:
        """Call ``on_request(text)`` instead of passing a request for a person to the LLM."""
        super().__init__()
        self._language = language
        self._on_request = on_request
        self._enabled = enabled
        self._handed_over = handed_over

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Swallow a request for a person, and every transcription after the hand-over."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            if self._handed_over():
                return
            if self._enabled() and asks_for_person(frame.text, self._language):
                await self._on_request(frame.text.strip())
                return
        await self.push_frame(frame, direction)


class LanguageSwitch(FrameProcessor):
    """After STT: once the caller's first words fixed another language, what comes first.

    When the call's language has just been fixed to one other than the opening language,
    ``frames_for(code)`` (the model's new instruction, the announcement in that language) go
    down before the transcription that fixed it, so they reach the model and the TTS before
    the model's answer does.
    """

    def __init__(self, language: CallLanguage, frames_for: Callable[[str], list[Frame]]) -> None:
        """Follow ``language``; push ``frames_for(code)`` ahead of the first transcription."""
        super().__init__()
        self._frames_for = frames_for
        self._due = False
        self._code = language.code
        language.on_fix(self._fixed)

    def _fixed(self, language: CallLanguage) -> None:
        if language.switched:
            self._due = True
            self._code = language.code

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Push the switch's frames before the transcription that fixed the language."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and self._due:
            self._due = False
            for ahead in self._frames_for(self._code):
                await self.push_frame(ahead, direction)
        await self.push_frame(frame, direction)
