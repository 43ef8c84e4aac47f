"""pipecat services bound to the process-wide :class:`~voice.engines.Engines`.

pipecat's stock services load their model in ``__init__``, once per call; these subclasses
(written against pipecat 1.14) take the already-loaded model instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator
from pipecat.utils.time import time_now_iso8601

from llm.scheduler import CLAUSE_ENDS
from voice.engines import Engines
from voice.language import CallLanguage
from voice.metrics import EARLY_TRANSCRIPTS, TurnTimeline
from voice.phrasebook import LANGUAGES
from voice.recorder import UnheardSpeechFrame
from voice.voices import Voice

log = logging.getLogger(__name__)

#: Seconds of audio beyond the utterance kept in Whisper's window (a margin for the decoder).
WINDOW_MARGIN_S = 3.0
#: Whisper's own window: faster-whisper pads every input to it.
FULL_WINDOW_FRAMES = 3000
_FRAMES_PER_S = 100  # 10 ms hop


def window_frames(duration_s: float) -> int:
    """Feature frames given to Whisper's encoder for an utterance of ``duration_s``.

    faster-whisper pads every input to a 30 s window (3000 frames), and on CPU the encoder's
    cost follows the window, not the speech. CTranslate2's encoder accepts shorter windows:
    the utterance and a margin of silence (with less, the decoder tends to say the utterance
    twice), at least 6 s, at most 30 s, an even count (the encoder's convolution has stride
    2). ``bench/stt_window.py`` measures the word error rate and the speed against the full
    window (BENCHMARKS.md).
    """
    frames = math.ceil((duration_s + WINDOW_MARGIN_S) * _FRAMES_PER_S)
    frames = min(FULL_WINDOW_FRAMES, max(6 * _FRAMES_PER_S, frames))
    return frames + frames % 2


def _spoken(tokens: list[int], tokenizer: Any, duration_s: float) -> list[int]:
    """The text tokens of the segments that start within the speech.

    Whisper marks each segment with start and end times; a segment that starts in the silent
    margin after the utterance is the decoder repeating itself, not something said.
    """
    keep: list[int] = []
    start = 0.0
    for t in tokens:
        if t >= tokenizer.timestamp_begin:
            if not keep or keep[-1] < tokenizer.eot:  # a segment's start (or end then start)
                start = (t - tokenizer.timestamp_begin) * 0.02
            continue
        if t < tokenizer.eot and start < duration_s - 0.2:
            keep.append(t)
    return keep


def _without_restart(text: str, least: int = 3) -> str:
    """``text`` cut where it starts over (its first ``least`` words said again)."""
    words = text.split()
    head = [w.strip(",.?!").lower() for w in words[:least]]
    if len(words) < 2 * least:
        return text
    for k in range(least, len(words) - least + 1):
        if [w.strip(",.?!").lower() for w in words[k : k + least]] == head:
            return " ".join(words[:k]).rstrip(",")
    return text


#: An ``auto`` call's language is fixed by an utterance of at least this many words whose
#: language Whisper gives at least this probability (among the supported ones); a shorter or
#: less certain one ("Allô ?") is transcribed in its likeliest language and detection goes on.
SURE_WORDS = 2
SURE_LANGUAGE = 0.5
SILENCE_LOGPROB = -1.0  # faster-whisper's log_prob_threshold
#: Without a VAD to ask, a trimmed segment shorter than this holds no words worth a decode.
MIN_HEARD_SEGMENT_S = 0.3
#: VAD speech after the announcement's end shorter than this is the VAD's lag, not words.
MIN_HEARD_SPEECH_S = 0.2


@dataclass(frozen=True)
class _Segment:
    text: str
    no_speech_prob: float


@dataclass(frozen=True)
class Detection:
    """The language Whisper heard, among those it was allowed, and its probability."""

    language: str
    probability: float


class TrimmedWhisper:
    """The shared faster-whisper model, its encoder given a window fitted to each utterance.

    Same features, same beam search (5) and the same prompt (language fixed, timestamps on) as
    ``WhisperModel.transcribe`` for one short utterance, without the padding to 30 s. Safe to
    call from several threads at once (CTranslate2 models are; two threads meeting a new
    language at once build its tokenizer twice, and one is kept).
    """

    def __init__(self, model: Any, beam_size: int = 5) -> None:
        """Transcribe with ``model`` (a ``faster_whisper.WhisperModel``)."""
        self._model = model
        self.beam_size = beam_size
        self._tokenizers: dict[str, Any] = {}

    def _tokenizer(self, language: str) -> Any:
        """The tokenizer of ``language``, built once per language, not per utterance."""
        from faster_whisper.tokenizer import Tokenizer

        found = self._tokenizers.get(language)
        if found is None:
            found = self._tokenizers[language] = Tokenizer(
                self._model.hf_tokenizer,
                self._model.model.is_multilingual,
                task="transcribe",
                language=language,
            )
        return found

    def detect(self, encoded: Any, among: Collection[str]) -> Detection:
        """The language of the ``encoded`` window, restricted to ``among`` (ISO 639-1 codes).

        As ``WhisperModel.detect_language``: the decoder's language-token probabilities, here
        on the trimmed window already encoded for the transcription, with the languages
        outside ``among`` left out and the rest renormalized.
        """
        scores = self._model.model.detect_language(encoded)[0]  # [("<|en|>", p), ...]
        allowed = [(token[2:-2], p) for token, p in scores if token[2:-2] in among]
        if not allowed:
            raise ValueError("none of the languages to detect is known to the model")
        language, best = max(allowed, key=lambda item: item[1])
        total = sum(p for _, p in allowed)
        return Detection(language, best / total if total > 0 else 0.0)

    def transcribe(
        self,
        audio: Any,
        language: str | None = None,
        detect: Collection[str] | None = None,
        **_: Any,
    ) -> tuple[list[_Segment], Detection | None]:
        """``([segment], detection)`` for 16 kHz float ``audio``, like ``WhisperModel.transcribe``.

        With ``detect`` (the languages allowed), the language is detected first on the same
        window and the audio decoded in it; ``detection`` says which (None without ``detect``).
        """
        from faster_whisper.audio import pad_or_trim

        model = self._model
        features = model.feature_extractor(audio)
        features = pad_or_trim(features, window_frames(len(audio) / 16000))
        encoded = model.encode(features)
        detection = self.detect(encoded, detect) if detect else None
        if detection is not None:
            language = detection.language
        tokenizer = self._tokenizer(str(language or "en"))
        # With timestamps, as faster-whisper decodes by default: the model then closes the
        # utterance with an end time instead of saying it again.
        prompt = list(tokenizer.sot_sequence)
        # Speech runs at most ~6 tokens a second: a longer output is a hallucinated repeat.
        most = len(prompt) + 8 + math.ceil(8 * len(audio) / 16000)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=self.beam_size,
            max_length=min(model.max_length, most),
            return_no_speech_prob=True,
            return_scores=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            max_initial_timestamp_index=50,
        )[0]
        tokens = result.sequences_ids[0]
        spoken = _spoken(tokens, tokenizer, len(audio) / 16000)
        text = _without_restart(tokenizer.decode(spoken).strip())
        # On a window this short the no-speech probability runs higher than on 30 s (some
        # utterances above pipecat's 0.4 cut, BENCHMARKS.md), so it alone would drop real
        # questions. faster-whisper's own rule is kept instead: silence
        # only when the decode is also unlikely (average log-probability under -1).
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        silent = result.no_speech_prob if avg_logprob < SILENCE_LOGPROB else 0.0
        return [_Segment(" " + text if text else "", silent)], detection


@functools.cache
def trimmed(model: Any) -> TrimmedWhisper:
    """The one :class:`TrimmedWhisper` over the process's ``model`` (its tokenizers with it)."""
    return TrimmedWhisper(model)


@dataclass(frozen=True)
class Heard:
    """One decode: Whisper's segments, and the language it detected (when it was asked)."""

    segments: list[Any]
    detection: Detection | None = None


class EarlySegment(bytes):
    """A segment whose transcription started when the caller paused, before the VAD's end.

    ``result`` is Whisper's answer (a future the decode thread completes); ``stale`` turns
    true when the caller spoke again before the VAD declared the end of speech.
    """

    result: asyncio.Future[Any]
    stale: bool = False
    started: float = 0.0


class UnheardSegment(bytes):
    """A segment the caller started before the announcement had played, kept in memory only.

    Decoded for the objection check alone (:class:`~voice.recorder.UnheardSpeechFrame`), never
    transcribed. ``result``: the early decode of the same audio, when there is one.
    """

    result: asyncio.Future[Any] | None = None


class SharedWhisperSTT(WhisperSTTService):
    """Whisper STT on the shared model: the call's language, window trimmed to the utterance.

    While the call's language is still being detected (an ``auto`` agent), each utterance is
    decoded in the language Whisper hears (among the supported ones); the first heard
    utterance with words fixes the call's language, and later ones are decoded in it.

    With ``vad`` (the call's VAD analyzer), a segment is transcribed as soon as the caller
    pauses (the VAD's first quiet window) instead of after the VAD's ``stop_secs``: if the
    pause becomes the end of speech, the transcript is ready that much earlier; if the caller
    goes on, the early decode is discarded and the whole segment is transcribed at its end.
    """

    def __init__(
        self,
        engines: Engines,
        language: str | CallLanguage,
        vad: SharedSileroVAD | None = None,
        heard_from: Callable[[], int | None] | None = None,
        **kwargs: Any,
    ) -> None:
        """Transcribe in ``language`` (an ISO 639-1 code, or the call's) with the shared model.

        With ``heard_from``, only the caller's audio from that byte of the stream on is
        transcribed (``None``: nothing yet): what the caller said before the announcement had
        played is never transcribed, even inside an utterance that goes on after it; it is
        only checked for an objection, in memory (:class:`UnheardSegment`).
        """
        self._shared_model = engines.whisper
        self._heard_from = heard_from
        self._urgency = engines.urgency
        self._vad = vad
        call = language if isinstance(language, CallLanguage) else CallLanguage(language)
        #: The call's language (shared with the session and the phrase detectors).
        self.call_language = call
        self._early: EarlySegment | None = None
        self._received = 0  # bytes of audio received since the call started
        self._followed = 0  # the VAD's changes up to this byte have been acted on
        super().__init__(
            settings=WhisperSTTService.Settings(
                model="shared", language=Language(self.call_language.code)
            ),
            device="cpu",
            **kwargs,
        )

    def _load(self) -> None:
        self._model = trimmed(self._shared_model)

    def _transcribe(self, pcm: bytes) -> Heard:
        """Whisper's segments for 16-bit PCM (run in a worker thread).

        While the call's language is being detected, detected among the supported languages.
        """
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        model = self._model  # set by _load
        assert isinstance(model, TrimmedWhisper)
        call = self.call_language
        detect = LANGUAGES if call.detecting else None
        with self._urgency.urgent():  # the caller waits for it (also for an early decode)
            segments, detection = model.transcribe(audio, language=call.code, detect=detect)
            return Heard(list(segments), detection)

    async def process_audio_frame(
        self, frame: InputAudioRawFrame, direction: FrameDirection
    ) -> None:
        """Buffer the audio; start an early decode when the caller pauses, drop it on speech."""
        await super().process_audio_frame(frame, direction)
        self._received += len(frame.audio)
        self._follow_vad()

    def _follow_vad(self) -> None:
        """Act on the VAD's state changes in the audio this service has received.

        The VAD processor runs ahead of (or a frame behind) this service, and a burst of
        frames can take it through a whole pause before this service sees the pause's first
        frame; so the states are read by position in the stream, not as they are now.
        """
        vad = self._vad
        if vad is None or self._model is None:
            return
        upto = min(self._received, vad.analyzed)
        for _, state in vad.changes(self._followed, upto):
            if state == VADState.SPEAKING and self._early is not None:
                self._early.stale = True
                self._early = None
                EARLY_TRANSCRIPTS.labels("discarded").inc()
        self._followed = upto  # both positions only grow
        paused = vad.state_at(upto) == VADState.STOPPING
        if paused and self._user_speaking and self._early is None:
            # Everything received so far: the pause, and at most a frame the VAD has not seen
            # (if that frame is speech, the VAD's next change discards this decode).
            early = EarlySegment(bytes(self._audio_buffer) + self._trailing_silence())
            early.result = asyncio.get_running_loop().run_in_executor(
                None, self._transcribe, bytes(early)
            )
            # A discarded decode's failure is nobody's to report.
            early.result.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._early = early
            early.started = time.monotonic()

    def _keep_heard(self) -> bool:
        """Cut the segment to the audio after the announcement played; False: nothing left.

        The segment ends at the last byte received, so it starts ``len(buffer)`` bytes before.
        A segment that starts before that point is also queued whole, in memory, as an
        :class:`UnheardSegment`: the caller may object at any time, even during the
        announcement, and its words are checked for an objection only.
        """
        if self._heard_from is None:
            return True
        heard = self._heard_from()
        start = self._received - len(self._audio_buffer)
        if heard is not None and heard <= start:
            return True
        early, self._early = self._early, None  # it decodes the uncut segment: not a transcript
        unheard = UnheardSegment(bytes(self._audio_buffer) + self._trailing_silence())
        if early is not None and not early.stale and self.is_usable:
            unheard.result = early.result
        elif early is not None:
            early.stale = True
        self._segment_queue.put_nowait(unheard)  # before the heard part: in the order said
        if heard is None or heard >= self._received or not self._speech_after(heard):
            self._audio_buffer.clear()
            self._user_speaking = False
            return False
        cut = heard - start
        del self._audio_buffer[: cut + cut % 2]
        return True

    def _speech_after(self, offset: int) -> bool:
        """Whether the caller spoke after byte ``offset`` of the stream (up to now).

        The VAD's speech runs on a little after the words end (it smooths the volume over a
        few windows): a tail shorter than ``MIN_HEARD_SPEECH_S`` is that lag, not speech.
        """
        if self._vad is None:
            return self._received - offset >= MIN_HEARD_SEGMENT_S * self.sample_rate * 2
        speech = (VADState.STARTING, VADState.SPEAKING)
        spoken, at, state = 0, offset, self._vad.state_at(offset)
        for change, new in self._vad.changes(offset, self._received):
            spoken += change - at if state in speech else 0
            at, state = change, new
        spoken += self._received - at if state in speech else 0
        return spoken >= MIN_HEARD_SPEECH_S * self.sample_rate * 2

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        """Queue the early decode when it covers the whole segment, else the segment."""
        self._follow_vad()  # the VAD has analyzed every frame received: its changes are known
        if not self._keep_heard():
            log.debug("utterance before the announcement had played: checked for objection only")
            return
        early, self._early = self._early, None
        if early is None or early.stale or not self.is_usable:
            await super()._handle_user_stopped_speaking(frame)
            return
        self._user_speaking = False
        self._audio_buffer.clear()
        self._record_stt_audio_usage(bytes(early))
        await self.emit_stt_usage_metrics()
        EARLY_TRANSCRIPTS.labels("used").inc()
        log.debug(
            "early transcription used: started %.3f s before the VAD's end, done: %s",
            time.monotonic() - early.started,
            early.result.done(),
        )
        await self._segment_queue.put(early)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe ``audio`` (16-bit PCM), or take its early decode's result."""
        if not self._model:
            yield ErrorFrame("Whisper model not available")
            return
        if isinstance(audio, UnheardSegment):
            async for frame in self._unheard(audio):
                yield frame
            return
        await self.start_processing_metrics()
        if isinstance(audio, EarlySegment):
            heard = await audio.result
        else:
            heard = await asyncio.to_thread(self._transcribe, audio)
        call, found = self.call_language, heard.detection
        if found is not None and not call.detecting and found.language != call.code:
            # Decoded while detecting, but an earlier utterance has fixed another language.
            heard = await asyncio.to_thread(self._transcribe, bytes(audio))
            found = None
        text = self._text(heard.segments)
        await self.stop_processing_metrics()
        if text:
            sure = found is not None and found.probability >= SURE_LANGUAGE
            if (
                sure
                and len(text.split()) >= SURE_WORDS
                and call.fix(found.language, found.probability)
            ):
                log.info(
                    "call language detected",
                    extra={"language": call.code, "probability": found.probability},
                )
            language = Language(call.code)
            await self._handle_transcription(text, True, language)
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language)

    async def _unheard(self, audio: UnheardSegment) -> AsyncGenerator[Frame, None]:
        """What the caller said before the announcement had played, for the refusal check.

        Not a transcription: no ``TranscriptionFrame``, no trace or metric of it; the
        :class:`~voice.recorder.UnheardSpeechFrame` goes no further than the refusal check.
        A failed decode is logged and the call goes on (DTMF 9 still objects).
        """
        try:
            if audio.result is not None:
                heard = await audio.result
            else:
                heard = await asyncio.to_thread(self._transcribe, bytes(audio))
        except Exception:
            log.exception("speech before the announcement had played could not be checked")
            return
        text = self._text(heard.segments)  # its language, if detected, fixes nothing
        if text:
            yield UnheardSpeechFrame(text=text)

    def _text(self, segments: list[Any]) -> str:
        """Whisper's segments as one text, without those that are likely silence."""
        cut = getattr(self._settings, "no_speech_prob", None)  # pipecat's 0.4
        cut = cut if isinstance(cut, float) else None
        # One transcript per segment, trimmed: pipecat joins a turn's transcripts with a space.
        return " ".join(
            s.text.strip() for s in segments if cut is None or s.no_speech_prob < cut
        ).strip()


class FirstClauseAggregator(SimpleTextAggregator):
    """Sentences for the TTS, except that a response's first clause goes as soon as it ends.

    Piper speaks nothing until it has synthesized a whole chunk, and the first chunk is what
    the caller waits for: "Yes, we open at eight on Saturday." starts with "Yes,", a fraction
    of the whole sentence's synthesis time. A clause ends at a comma, semicolon or colon
    followed by a space ("1,000" does not split); later chunks are whole sentences.
    """

    def __init__(self, **kwargs: Any) -> None:
        """As :class:`SimpleTextAggregator`."""
        super().__init__(**kwargs)
        self._first = True

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Yield complete sentences, and the first clause of a response on its own."""
        for char in text:
            async for sentence in super().aggregate(char):
                self._first = False
                yield sentence
            if self._first and char.isspace() and self._text.rstrip().endswith(CLAUSE_ENDS):
                clause = self._text.strip()
                await super().reset()
                self._first = False
                if clause:
                    yield Aggregation(text=clause, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        """The rest of the response; the next one starts with its first clause again."""
        self._first = True
        return await super().flush()

    async def handle_interruption(self) -> None:
        """Drop what was collected; the next response starts afresh."""
        self._first = True
        await super().handle_interruption()

    async def reset(self) -> None:
        """Empty, at the start of a response."""
        self._first = True
        await super().reset()


class SharedTTS(PiperTTSService):
    """Text to speech on the process's shared voices; fixed phrases come from the cache.

    Speaks with one installed voice (Piper or espeak-ng, :mod:`voice.voices`), which
    :meth:`use_voice` can change for the rest of the call.
    """

    def __init__(
        self,
        engines: Engines,
        voice: str | None = None,
        timeline: TurnTimeline | None = None,
        **kwargs: Any,
    ) -> None:
        """Speak with ``voice`` (default: the English one); mark each turn's first audio."""
        name = voice or engines.voice_name
        # PiperTTSService.__init__ would load a voice of its own: skip it, keep the rest.
        TTSService.__init__(
            self,
            push_start_frame=True,
            push_stop_frames=True,
            settings=PiperTTSService.Settings(model=None, voice=name, language=None),
            **kwargs,
        )
        self._engines = engines
        engines.voices.info(name)  # installed (KeyError otherwise); loaded before first use
        self._speaker: Voice | None = None
        self._wanted = name
        self._timeline = timeline or TurnTimeline()
        # pipecat takes no aggregator argument: replace its sentence aggregator in place.
        self._text_aggregator = FirstClauseAggregator(
            aggregation_type=self._text_aggregation_mode, language=self._text_aggregator.language
        )

    @property
    def voice(self) -> str:
        """The name of the voice the next sentence is spoken with."""
        return self._wanted

    def use_voice(self, name: str) -> None:
        """Speak with ``name`` from the next sentence on.

        A voice used for the first time in the process is loaded in a worker thread before
        that sentence; ``KeyError`` when no such voice is installed.
        """
        self._engines.voices.info(name)
        self._wanted = name

    async def _current(self) -> Voice:
        """The voice to speak with, loaded off the event loop when it is new to the process."""
        if self._speaker is None or self._speaker.info.name != self._wanted:
            self._speaker = await asyncio.to_thread(self._engines.voices.get, self._wanted)
        return self._speaker

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Cached audio for a fixed phrase at the pipeline's rate, else synthesize.

        The first chunk of an answer (the caller is waiting for it) is urgent work; later
        chunks give way to urgent work, of this call or another (:class:`Urgency`).
        """
        leading = self._timeline.awaits("first_sentence")
        self._timeline.mark("first_sentence", time.time())
        async for frame in self._run_tts(text, context_id, leading):
            if isinstance(frame, TTSAudioRawFrame):
                self._timeline.mark("tts_first_audio", time.time())
            yield frame

    async def _run_tts(
        self, text: str, context_id: str, leading: bool
    ) -> AsyncGenerator[Frame, None]:
        try:
            speaker = await self._current()
        except Exception as e:  # the voice did not load: the one speaking so far goes on
            log.error("voice %s could not be loaded: %s", self._wanted, e)
            if self._speaker is None:  # none ever loaded: this answer is not spoken
                yield ErrorFrame(error=f"voice could not be loaded: {type(e).__name__}")
                return
            self._wanted = self._speaker.info.name
            speaker = self._speaker
        cached = self._engines.cached(text.strip(), self.sample_rate, speaker.info.name)
        chunks = once(cached) if cached is not None else self._synthesized(speaker, text, leading)
        rate = self.sample_rate if cached is not None else speaker.sample_rate
        try:
            if cached is None:
                await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                chunks, in_sample_rate=rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as e:  # as PiperTTSService: the answer ends, the call goes on
            log.error("speech synthesis failed: %s", e)
            yield ErrorFrame(error=f"speech synthesis failed: {e}")
        finally:
            await self.stop_ttfb_metrics()

    async def _synthesized(self, speaker: Voice, text: str, leading: bool) -> AsyncIterator[bytes]:
        """The voice's chunks of ``text`` at its own rate, each synthesized in a worker thread."""
        urgency = self._engines.urgency
        chunks = iter(speaker.chunks(text))

        def chunk() -> bytes | None:
            if leading:
                with urgency.urgent():
                    return next(chunks, None)
            urgency.give_way()
            return next(chunks, None)

        while (audio := await asyncio.to_thread(chunk)) is not None:
            yield audio


async def once(audio: bytes) -> AsyncIterator[bytes]:
    """``audio`` as a one-chunk stream."""
    yield audio


class _SharedSileroModel(SileroOnnxModel):
    """Per-call Silero state over the process-wide ONNX session."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVAD(SileroVADAnalyzer):
    """Silero VAD whose ONNX session is shared; the recurrent state stays per call."""

    def __init__(self, session: Any, params: VADParams) -> None:
        """A VAD for one call over ``session`` (the Silero ONNX session of the process)."""
        VADAnalyzer.__init__(self, sample_rate=None, params=params)
        self._model = _SharedSileroModel(session)
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        #: Bytes of audio analyzed since the call started.
        self.analyzed = 0
        self._changes: deque[tuple[int, VADState]] = deque(maxlen=64)

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Analyze ``buffer`` and remember where in the stream the state changed."""
        state = await super().analyze_audio(buffer)
        self.analyzed += len(buffer)
        if state != self.state_at(self.analyzed):
            self._changes.append((self.analyzed, state))
        return state

    def state_at(self, offset: int) -> VADState:
        """The state once the audio up to byte ``offset`` of the stream had been analyzed."""
        for at, state in reversed(self._changes):
            if at <= offset:
                return state
        return VADState.QUIET

    def changes(self, after: int, upto: int) -> list[tuple[int, VADState]]:
        """The state changes in the stream between bytes ``after`` (excluded) and ``upto``."""
        return [(at, state) for at, state in self._changes if after < at <= upto]
