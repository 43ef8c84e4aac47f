"""One call's pipeline: carrier WebSocket -> VAD -> Whisper -> LLM -> Piper -> carrier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    ErrorFrame,
    FunctionCallResultProperties,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.services.llm_service import FunctionCallParams
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_mute import MuteUntilFirstBotCompleteUserMuteStrategy
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy, SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from calls.events import CallEvent, CallEventType, current_call_id
from calls.store import CallRecord, CallStore, Turn
from carriers.playback import PlaybackAcks
from llm.client import create_llm_service
from recordings.crypto import Identity
from recordings.objects import EncryptedObjects
from recordings.transcripts import TranscriptLog, TurnRecord
from routing.directory import Agent
from voice.announcement import default_announcement, missing_parts
from voice.engines import PHONE_RATE, Engines
from voice.metrics import ACTIVE_CALLS, CALLS, TurnTimeline
from voice.processors import ANNOUNCEMENT_MARK, Announcer, ClosingPhrases, is_closing
from voice.recorder import CallRecorder, ConsentGate, RefusalPhrases
from voice.services import SharedPiperTTS, SharedSileroVAD, SharedWhisperSTT
from voice.turns import SpeculativeTurnStop

log = logging.getLogger(__name__)

#: Whisper reads 16 kHz; the carrier's 8 kHz mu-law is resampled once on the way in.
STT_RATE = 16000
FAREWELL = "Thank you for calling. Goodbye."
APOLOGY = "I'm sorry, I'm having technical trouble and have to end this call. Goodbye."
NOT_RECORDED = "Understood. This call is no longer recorded."
TIME_UP = "We have reached the time limit for this call. Thank you for calling. Goodbye."
#: After the closing phrase at the maximum length, how long the pipeline may take to say it
#: and end on its own before it is cancelled (well inside the carrier's grace period).
END_GRACE_S = 15.0
_MAX_REJECTED_EVENTS = 20
#: With a carrier that acknowledges playback, how long after the announcement could have
#: played the gate still waits for the acknowledgement before it opens anyway (a lost mark
#: must not hold the call; by then the carrier has played it, in real time).
MARK_GRACE_S = 3.0
#: How often a carrier that needs it hears that a silent call is still alive.
KEEPALIVE_S = 10.0
#: Servers with tool calling (vLLM with a tool parser) let the model hang up; servers without
#: it (the embedded llama.cpp server) ignore the list, and the closing phrase still works.
END_CALL_TOOLS = ToolsSchema(
    standard_tools=[
        FunctionSchema(
            name="end_call",
            description="Hang up once the caller has said goodbye or needs nothing more.",
            properties={},
            required=[],
        ),
        FunctionSchema(
            name="stop_recording",
            description="The caller refuses to be recorded: stop and delete the recording.",
            properties={},
            required=[],
        ),
    ]
)


@dataclass(frozen=True)
class CallConfig:
    """Per-process settings of the call pipeline."""

    vad_start_secs: float = 0.1
    vad_stop_secs: float = 0.25
    vad_min_volume: float = 0.5
    turn_timeout_secs: float = 0.35
    #: Transcribe when the caller pauses, not after the VAD's stop_secs (voice/services.py).
    early_stt: bool = True
    #: Start the answer inside the pause window, hold it until the window closes (voice/turns.py).
    speculate: bool = True
    max_tokens: int = 60
    max_sentences: int = 2
    temperature: float = 0.3
    #: A call ends politely after this long (outbound; inbound too unless set apart).
    max_seconds: int = 900
    inbound_max_seconds: int | None = None

    def max_seconds_of(self, direction: str) -> int:
        """The maximum length of a call going ``direction`` ("inbound" or "outbound")."""
        if direction == "inbound" and self.inbound_max_seconds is not None:
            return self.inbound_max_seconds
        return self.max_seconds

    def vad_params(self) -> VADParams:
        """The VAD's thresholds (pipecat's confidence 0.7; start, stop and volume tuned).

        pipecat's defaults (start after 0.2 s of speech at volume 0.6) miss short answers: its
        volume is measured over a 0.4 s window and smoothed, so a 0.3 s "Yes." or "No." is loud
        enough for too short a time. BENCHMARKS.md has the measurement.
        """
        return VADParams(
            start_secs=self.vad_start_secs,
            stop_secs=self.vad_stop_secs,
            min_volume=self.vad_min_volume,
        )


def system_prompt(agent: Agent) -> str:
    """The agent's prompt plus what every phone agent needs to know."""
    return (
        f"{agent.prompt.strip()}\n\nYou are speaking on the phone: answer in one or two short, "
        "plain sentences, with no lists, markup or emojis. When the caller is done, say goodbye."
    )


def fixed_phrases(agent: Agent) -> tuple[str, ...]:
    """What an agent may say without its LLM: announcement, greeting, farewell, apologies."""
    return tuple(
        t.strip()
        for t in (agent.announcement, agent.greeting, FAREWELL, APOLOGY, NOT_RECORDED, TIME_UP)
    )


async def prepare_phrases(engines: Engines, agent: Agent) -> None:
    """Synthesize an agent's fixed phrases into the cache (once per process)."""
    for text in fixed_phrases(agent):
        await engines.phrase(text, PHONE_RATE)


class _CallObserver(BaseObserver):
    """Notices barge-ins (once per interruption) and times each caller turn's stages."""

    def __init__(self, session: CallSession, timeline: TurnTimeline) -> None:
        super().__init__()
        self._session = session
        self._timeline = timeline
        self.bot_speaking = False

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        now = time.time()
        if isinstance(frame, BotStartedSpeakingFrame):
            if not self.bot_speaking and (stages := self._timeline.answered(now)):
                stages_s = {k: round(v, 3) for k, v in stages.items()}
                log.info("caller answered", extra={"stages_s": stages_s})
            self.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._timeline.speech_ended(frame.timestamp, frame.stop_secs)
        elif isinstance(frame, TranscriptionFrame):
            self._timeline.mark("stt", now)
        elif isinstance(frame, LLMContextFrame):
            self._timeline.mark("turn_end", now)
        elif isinstance(frame, LLMTextFrame):
            self._timeline.mark("llm_first_token", now)
        elif isinstance(frame, InterruptionFrame) and self.bot_speaking:
            # One interruption travels as several frames; the first one counts.
            self.bot_speaking = False
            await self._session.event(CallEventType.BARGE_IN)


class CallSession:
    """Runs one call from the media WebSocket's start to its close."""

    def __init__(
        self,
        websocket: WebSocket,
        serializer: FrameSerializer,
        call: CallRecord,
        agent: Agent,
        engines: Engines,
        store: CallStore,
        config: CallConfig,
        *,
        keepalive: str | None = None,
        hang_up: Callable[[], Awaitable[None]] | None = None,
        objects: EncryptedObjects | None = None,
        on_objection: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """Prepare the pipeline of ``call`` answered by ``agent``.

        ``keepalive`` is a text message the carrier needs while the agent is silent (Sinch's
        heartbeat); ``hang_up`` ends the call through the carrier's REST API when the platform
        hangs up (where closing the media socket is not enough). ``objects`` stores the
        encrypted recording and transcript (per the agent's settings, once the consent gate
        opens); ``on_objection(how)`` is told when the caller refuses the recording.
        """
        self.call = call
        self.websocket = websocket
        self._keepalive = keepalive
        self._hang_up = hang_up
        self.agent = agent
        self.store = store
        self.engines = engines
        self._ending = False
        self._cut = False  # the maximum length cancelled the pipeline
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rejected = 0
        self.max_seconds = config.max_seconds_of(call.direction)
        self.timeline = TurnTimeline()
        self._observer = _CallObserver(self, self.timeline)
        self._on_objection = on_objection
        self.gate = ConsentGate(self._objection)
        #: The byte of the caller's stream by which the announcement had played (None: not yet).
        self.heard_at: int | None = None
        self._heard = False
        self._earliest: float | None = None  # monotonic: it cannot have played before
        self._playback_timer: asyncio.Task[None] | None = None
        self._codec = serializer if isinstance(serializer, PlaybackAcks) else None
        if self._codec is not None:
            self._codec.on_played = self._mark_played
        expires = call.created_at + agent.retention_days * 86400
        self.recorder = (
            CallRecorder(objects, Identity(call.tenant, call.call_id, "recording"), expires)
            if objects is not None and agent.recording
            else None
        )
        self.transcript = (
            TranscriptLog(objects, Identity(call.tenant, call.call_id, "transcript"), expires)
            if objects is not None and agent.store_transcripts
            else None
        )
        self.transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        vad_analyzer = SharedSileroVAD(engines.silero, config.vad_params())
        # Whisper base on 2 CPU cores: about 1.5-2 s from end of speech to transcript.
        stt = SharedWhisperSTT(
            engines, agent.language, vad=vad_analyzer if config.early_stt else None,
            heard_from=lambda: self.heard_at, ttfs_p99_latency=2.0,
        )  # fmt: skip
        llm = create_llm_service(
            engines.llm,
            system=system_prompt(agent),
            max_tokens=config.max_tokens,
            max_sentences=config.max_sentences,
            temperature=config.temperature,
        )
        tts = SharedPiperTTS(engines, timeline=self.timeline)
        context = LLMContext(tools=END_CALL_TOOLS)
        llm.register_function("end_call", self._end_call_tool)
        llm.register_function("stop_recording", self._stop_recording_tool)
        turn_stop: BaseUserTurnStopStrategy = (
            SpeculativeTurnStop(user_speech_timeout=config.turn_timeout_secs)
            if config.speculate
            else SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=config.turn_timeout_secs)
        )
        aggregators = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()],
                    stop=[turn_stop],
                ),
                # The announcement is not interruptible: the caller must hear all of it.
                user_mute_strategies=[MuteUntilFirstBotCompleteUserMuteStrategy()],
            ),
        )
        vad = VADProcessor(vad_analyzer=vad_analyzer)
        # Its audio is set by run(): the phrase cache may drop it before then.
        self.announcer = Announcer(
            b"", PHONE_RATE, self._announcement_started, self._announcement_sending
        )
        self.pipeline = Pipeline(
            [
                self.transport.input(),
                vad,
                stt,
                RefusalPhrases(self.gate),
                ClosingPhrases(self._caller_goodbye),
                aggregators.user(),
                llm,
                tts,
                self.announcer,
                self.transport.output(),
                self.gate,
                *([self.recorder.buffer] if self.recorder else []),
                aggregators.assistant(),
            ]
        )
        self.worker = PipelineWorker(
            self.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=STT_RATE,
                audio_out_sample_rate=PHONE_RATE,
            ),
            enable_rtvi=False,
            idle_timeout_secs=None,
            observers=[self._observer],
        )

        @aggregators.user().event_handler("on_user_turn_stopped")
        async def _user_turn(_agg: Any, _strategy: Any, message: Any) -> None:
            if message.content and message.content.strip():
                await self._turn("caller", message.content.strip())

        @aggregators.assistant().event_handler("on_assistant_turn_stopped")
        async def _agent_turn(_agg: Any, message: Any) -> None:
            text = (message.content or "").strip()
            if text:
                await self._turn("agent", text, interrupted=message.interrupted)
            if text and is_closing(text) and not self._ending:
                self._ending = True
                await self.event(
                    CallEventType.HANGUP_REQUESTED, by="agent", reason="closing phrase"
                )
                await self.worker.queue_frame(EndFrame())

        @self.transport.event_handler("on_client_disconnected")
        async def _disconnected(_transport: Any, _ws: Any) -> None:
            await self.worker.cancel()

        @self.worker.event_handler("on_pipeline_error")
        async def _error(_worker: Any, frame: ErrorFrame) -> None:
            await self._fail(str(frame.error))

    # -- recording what happens ---------------------------------------------------------

    async def event(self, kind: CallEventType, **data: Any) -> None:
        """Record a lifecycle event; a store failure is logged, never raised into the call."""
        log.info("call event", extra={"event": str(kind), **data})
        try:
            await self.store.add_event(CallEvent(kind, self.call.call_id, time.time(), data))
        except Exception:
            log.exception("could not store call event", extra={"event": str(kind)})

    async def _turn(self, role: str, text: str, interrupted: bool = False) -> None:
        log.info("turn", extra={"role": role, "chars": len(text), "interrupted": interrupted})
        now = time.time()
        try:
            await self.store.add_turn(self.call.call_id, Turn(role, text, now, interrupted))
            # Nothing is written to the transcript before the announcement has played.
            if self.transcript is not None and self.gate.is_open:
                await self.transcript.add(TurnRecord(role, text, now, interrupted))
        except Exception:
            log.exception("could not store transcript turn")

    def media_rejected(self, reason: str) -> None:
        """Serializer callback: a malformed media message was dropped."""
        self._rejected += 1
        log.warning("media message rejected", extra={"reason": reason, "count": self._rejected})
        if self._rejected <= _MAX_REJECTED_EVENTS:
            self._spawn(self.event(CallEventType.MEDIA_REJECTED, reason=reason))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_alive(self, message: str) -> None:
        """Send ``message`` every few seconds while the agent is silent."""
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            if not self._observer.bot_speaking:
                try:
                    await self.websocket.send_text(message)
                except Exception:
                    return  # the socket is gone: the call is over

    # -- call flow ----------------------------------------------------------------------

    async def _announcement_started(self) -> None:
        await self.event(
            CallEventType.ANNOUNCEMENT_STARTED,
            text=self.agent.announcement,
            duration_s=round(self.announcer.duration_s, 3),
        )

    async def _announcement_sending(self, at: float) -> None:
        """Its first chunk left at ``at``: it has played by ``at`` + its duration at the soonest.

        The gate opens on the carrier's acknowledgement of the announcement's mark; without
        one (Sinch), once that duration has passed; with one that never comes, a grace later.
        """
        self._earliest = at + self.announcer.duration_s
        acks = self._codec is not None and self._codec.acknowledges_playback
        self._schedule_heard(self._earliest + (MARK_GRACE_S if acks else 0.0), None)

    def _mark_played(self, name: str, position: int) -> None:
        """Codec callback: the carrier has played the audio sent before mark ``name``."""
        if name != ANNOUNCEMENT_MARK or self._earliest is None or self._heard:
            return
        if time.monotonic() < self._earliest:  # sooner than it can have played: not trusted
            self._schedule_heard(self._earliest, None)
        else:
            self._schedule_heard(0.0, position)

    def _schedule_heard(self, at: float, position: int | None) -> None:
        if self._playback_timer is not None:
            self._playback_timer.cancel()
        self._playback_timer = asyncio.get_running_loop().create_task(
            self._heard_at_time(at, position)
        )

    async def _heard_at_time(self, at: float, position: int | None) -> None:
        """At monotonic ``at``: the caller has heard the announcement, up to ``position``."""
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if self._heard:
            return
        self._heard = True
        if position is None:
            position = self._codec.received if self._codec is not None else self.gate.seen
        await self._announcement_played(position)

    async def _announcement_played(self, position: int) -> None:
        """The caller has heard the announcement by byte ``position`` of their audio."""
        if not self.announcer.duration_s:  # nothing played: the gate stays closed
            return
        self.heard_at = position
        await self.event(CallEventType.ANNOUNCEMENT_PLAYED)
        self.gate.open(position)
        if self.recorder is not None and self.gate.is_open:
            try:
                await self.recorder.start()
                await self.event(CallEventType.RECORDING_STARTED)
            except Exception:  # the call goes on unrecorded
                log.exception("recording could not start")
        await self.worker.queue_frame(TTSSpeakFrame(self.agent.greeting.strip()))

    async def _objection(self, how: str) -> None:
        """The caller refused the recording: stop, delete what was captured, say so."""
        for kept in (self.recorder, self.transcript):
            if kept is not None:
                try:
                    await kept.discard()
                except Exception:
                    log.exception("captured data could not be deleted")
        await self.event(CallEventType.RECORDING_OBJECTED, how=how)
        if self._on_objection is not None:
            try:
                await self._on_objection(how)
            except Exception:
                log.exception("objection could not be audited")
        if self.recorder is not None and not self._ending:
            await self.worker.queue_frame(TTSSpeakFrame(NOT_RECORDED))

    async def _stop_recording_tool(self, params: FunctionCallParams) -> None:
        await params.result_callback(
            {"ok": True}, properties=FunctionCallResultProperties(run_llm=False)
        )
        await self.gate.object("tool")

    async def _end_call_tool(self, params: FunctionCallParams) -> None:
        await params.result_callback(
            {"ok": True}, properties=FunctionCallResultProperties(run_llm=False)
        )
        await self._say_and_end(FAREWELL, by="agent", reason="end_call tool")

    async def _caller_goodbye(self, text: str) -> None:
        await self._turn("caller", text)
        await self._say_and_end(FAREWELL, by="caller", reason="closing phrase")

    async def _say_and_end(self, text: str, **data: Any) -> None:
        if self._ending:
            return
        self._ending = True
        await self.event(CallEventType.HANGUP_REQUESTED, **data)
        await self.worker.queue_frames([TTSSpeakFrame(text), EndFrame()])

    async def _time_limit(self) -> None:
        """End the call at its maximum length: the closing phrase, then the hang-up for sure.

        A pipeline that has not ended ``END_GRACE_S`` after the phrase (a caller talking over
        it, a stuck model) is cancelled; either way the carrier is told to hang up.
        """
        await asyncio.sleep(self.max_seconds)
        log.info("call reached its maximum length", extra={"max_seconds": self.max_seconds})
        if not self._ending:
            await self._say_and_end(
                TIME_UP, by="platform", reason="maximum length", max_seconds=self.max_seconds
            )
        await asyncio.sleep(END_GRACE_S)
        log.warning("call did not end after its closing phrase: cancelled")
        self._ending = self._cut = True
        await self.worker.cancel()

    async def _fail(self, error: str) -> None:
        log.error("call pipeline error", extra={"error": error})
        await self.event(CallEventType.ERROR, error=error[:500])
        await self._say_and_end(APOLOGY, by="platform", reason="error")

    async def _prepare_announcement(self) -> bool:
        """Give the announcer its audio: from the phrase cache, or synthesized now.

        The bounded cache may have dropped the phrase since the call was answered; then it is
        synthesized again in a worker thread. False (the call cannot go on) when there is no
        audio: a call never runs without its whole announcement.
        """
        text = self.agent.announcement.strip()
        if missing_parts(text, self.agent.language):
            # Stored before announcements were checked: the language's default says it all.
            log.warning("agent announcement incomplete: the default one is played")
            text = default_announcement(self.agent.language)
        try:
            audio = await self.engines.phrase(text, PHONE_RATE) if text else b""
        except Exception:
            log.exception("the announcement could not be synthesized")
            audio = b""
        if not audio:
            await self.event(CallEventType.ERROR, error="announcement unavailable")
            return False
        self.announcer.audio = audio
        return True

    async def _run_pipeline(self) -> None:
        """Run the pipeline until it ends, with its keep-alive and its maximum length."""
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        keepalive = (
            asyncio.create_task(self._keep_alive(self._keepalive)) if self._keepalive else None
        )
        time_limit = asyncio.create_task(self._time_limit())
        try:
            await runner.run()
        finally:
            if keepalive is not None:
                keepalive.cancel()
            if not self._cut:  # a cut in progress finishes on its own
                time_limit.cancel()
            for task in (keepalive, time_limit):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def run(self) -> None:
        """Run the call until either side hangs up."""
        token = current_call_id.set(self.call.call_id)
        ACTIVE_CALLS.inc()
        try:
            await self.event(CallEventType.MEDIA_CONNECTED, agent=self.agent.name)
            try:
                await self.store.advance(self.call.call_id, "in-progress", time.time())
            except Exception:
                log.exception("could not update call state")
            if await self._prepare_announcement():
                await self._run_pipeline()
            else:
                self._ending = True
                with contextlib.suppress(Exception):  # the caller may have gone already
                    await self.websocket.close()
            if self._ending and self._hang_up is not None:
                try:
                    await self._hang_up()
                except Exception as e:  # the carrier ends the call anyway when the socket closes
                    log.warning("carrier hang-up failed", extra={"error": str(e)})
        finally:
            if self._playback_timer is not None:
                self._playback_timer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._playback_timer
            for kept in (self.recorder, self.transcript):
                if kept is not None:
                    try:
                        await kept.finish()
                    except Exception:
                        log.exception("recording or transcript could not be finalized")
            ACTIVE_CALLS.dec()
            CALLS.labels("ended_by_platform" if self._ending else "ended_by_caller").inc()
            for task in list(self._tasks):
                await task
            await self.event(CallEventType.MEDIA_CLOSED)
            current_call_id.reset(token)
