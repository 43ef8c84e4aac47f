"""pipecat services bound to the process-wide :class:`~voice.engines.Engines`.

pipecat's stock services load their model in ``__init__``, once per call; these subclasses
(written against pipecat 1.14) take the already-loaded model instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import Frame
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language

from voice.engines import Engines


class SharedWhisperSTT(WhisperSTTService):
    """Whisper STT on the shared model, language fixed by the agent (no detection)."""

    def __init__(self, engines: Engines, language: str, **kwargs: Any) -> None:
        """Transcribe in ``language`` (an ISO 639-1 code) with the shared model."""
        self._shared_model = engines.whisper
        super().__init__(
            settings=WhisperSTTService.Settings(model="shared", language=Language(language)),
            device="cpu",
            **kwargs,
        )

    def _load(self) -> None:
        self._model = self._shared_model


class SharedPiperTTS(PiperTTSService):
    """Piper TTS on the shared voice; fixed phrases come from the engines' cache."""

    def __init__(self, engines: Engines, **kwargs: Any) -> None:
        """Speak with the shared voice."""
        # PiperTTSService.__init__ would load the voice again: skip it, keep the rest.
        TTSService.__init__(
            self,
            push_start_frame=True,
            push_stop_frames=True,
            settings=PiperTTSService.Settings(model=None, voice=engines.voice_name, language=None),
            **kwargs,
        )
        self._voice = engines.piper
        self._engines = engines

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Cached audio for a fixed phrase at the pipeline's rate, else synthesize."""
        cached = self._engines.cached(text.strip(), self.sample_rate)
        if cached is None:
            async for frame in super().run_tts(text, context_id):
                yield frame
            return

        async def once() -> AsyncIterator[bytes]:
            yield cached

        async for frame in self._stream_audio_frames_from_iterator(
            once(), in_sample_rate=self.sample_rate, context_id=context_id
        ):
            yield frame


class _SharedSileroModel(SileroOnnxModel):
    """Per-call Silero state over the process-wide ONNX session."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVAD(SileroVADAnalyzer):
    """Silero VAD whose ONNX session is shared; the recurrent state stays per call."""

    def __init__(self, engines: Engines, params: VADParams) -> None:
        """A VAD for one call."""
        VADAnalyzer.__init__(self, sample_rate=None, params=params)
        self._model = _SharedSileroModel(engines.silero)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
