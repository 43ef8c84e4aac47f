"""One call's pipeline: carrier WebSocket -> VAD -> Whisper -> LLM -> Piper -> carrier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    FunctionCallResultProperties,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_mute import MuteUntilFirstBotCompleteUserMuteStrategy
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy, SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from calls.events import CallEvent, CallEventType, current_call_id
from calls.records import CallRecord, Turn
from calls.state import CallState
from calls.store import CallStore
from carriers.playback import PlaybackAcks
from llm.client import create_llm_service
from llm.settings import LLMSettings
from recordings.crypto import Identity
from recordings.objects import EncryptedObjects
from recordings.transcripts import TranscriptLog, TurnRecord
from routing.directory import Agent
from voice.announcement import default_announcement, missing_parts
from voice.engines import PHONE_RATE, Engines
from voice.media import CarrierLink
from voice.metrics import ACTIVE_CALLS, CALLS, TurnTimeline
from voice.observer import CallObserver
from voice.playback import HeardClock
from voice.processors import Announcer, ClosingPhrases, is_closing
from voice.prompt import APOLOGY, END_CALL_TOOLS, FAREWELL, NOT_RECORDED, TIME_UP, system_prompt
from voice.recorder import CallRecorder, ConsentGate, RefusalPhrases
from voice.services import SharedPiperTTS, SharedSileroVAD, SharedWhisperSTT
from voice.settings import CallSettings
from voice.turns import SpeculativeTurnStop

log = logging.getLogger(__name__)

#: Whisper reads 16 kHz; the carrier's 8 kHz mu-law is resampled once on the way in.
STT_RATE = 16000
#: After the closing phrase at the maximum length, how long the pipeline may take to say it
#: and end on its own before it is cancelled (well inside the carrier's grace period).
END_GRACE_S = 15.0
_MAX_REJECTED_EVENTS = 20
#: How often a carrier that needs it hears that a silent call is still alive.
KEEPALIVE_S = 10.0


@dataclass(frozen=True)
class SessionDeps:
    """What every call's session takes from the platform (one for the process).

    ``llm`` gives the answers' knobs (length, sentences, temperature); ``objects`` stores the
    encrypted recording and transcript (per the agent's settings, once the consent gate opens).
    """

    store: CallStore
    engines: Engines
    settings: CallSettings
    llm: LLMSettings
    objects: EncryptedObjects | None = None


class CallSession:
    """Runs one call from the media WebSocket's start to its close."""

    def __init__(
        self,
        transport: BaseTransport,
        call: CallRecord,
        agent: Agent,
        deps: SessionDeps,
        link: CarrierLink,
        on_objection: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """Prepare the pipeline of ``call`` answered by ``agent`` on the carrier's ``transport``.

        ``link`` is the rest of the carrier's side (its socket, codec, keep-alive and hang-up);
        ``on_objection(how)`` is told when the caller refuses the recording.
        """
        self.call = call
        self.agent = agent
        self.transport = transport
        self.link = link
        self.store = deps.store
        self.engines = deps.engines
        self._deps = deps
        self._ending = False
        self._cut = False  # the maximum length cancelled the pipeline
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rejected = 0
        self.max_seconds = deps.settings.max_seconds_of(call.direction)
        self.timeline = TurnTimeline()
        self._observer = CallObserver(self.timeline, lambda: self.event(CallEventType.BARGE_IN))
        self._on_objection = on_objection
        self.gate = ConsentGate(self._objection)
        #: The byte of the caller's stream by which the announcement had played (None: not yet).
        self.heard_at: int | None = None
        codec = link.codec if isinstance(link.codec, PlaybackAcks) else None
        self._clock = HeardClock(codec, lambda: self.gate.seen, self._announcement_played)
        expires = call.created_at + agent.retention_days * 86400
        objects = deps.objects
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
        # Its audio is set by run(): the phrase cache may drop it before then.
        self.announcer = Announcer(
            b"", PHONE_RATE, self._announcement_started, self._announcement_sending
        )
        self.pipeline = self._build_pipeline()
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

        @self.transport.event_handler("on_client_disconnected")
        async def _disconnected(_transport: Any, _ws: Any) -> None:
            await self.worker.cancel()

        @self.worker.event_handler("on_pipeline_error")
        async def _error(_worker: Any, frame: ErrorFrame) -> None:
            await self._fail(str(frame.error))

    def _build_pipeline(self) -> Pipeline:
        """The call's processors, from the caller's audio in to the agent's audio out.

        transport in -> VAD -> Whisper -> refusal and closing phrases -> user turn -> LLM ->
        Piper -> announcer -> transport out -> consent gate -> recorder -> agent turn.
        """
        settings, answers, engines = self._deps.settings, self._deps.llm, self.engines
        vad_analyzer = SharedSileroVAD(engines.silero, settings.vad_params())
        stt = SharedWhisperSTT(
            engines,
            self.agent.language,
            vad=vad_analyzer if settings.early_stt else None,
            heard_from=lambda: self.heard_at,
            ttfs_p99_latency=2.0,
        )
        llm = create_llm_service(
            engines.llm,
            system=system_prompt(self.agent),
            max_tokens=answers.max_tokens,
            max_sentences=answers.max_sentences,
            temperature=answers.temperature,
        )
        llm.register_function("end_call", self._end_call_tool)
        llm.register_function("stop_recording", self._stop_recording_tool)
        turn_stop: BaseUserTurnStopStrategy = (
            SpeculativeTurnStop(user_speech_timeout=settings.turn_timeout_secs)
            if settings.speculate
            else SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=settings.turn_timeout_secs)
        )
        aggregators = LLMContextAggregatorPair(
            LLMContext(tools=END_CALL_TOOLS),
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()],
                    stop=[turn_stop],
                ),
                # The announcement is not interruptible: the caller must hear all of it.
                user_mute_strategies=[MuteUntilFirstBotCompleteUserMuteStrategy()],
            ),
        )
        self._watch_turns(aggregators)
        return Pipeline(
            [
                self.transport.input(),
                VADProcessor(vad_analyzer=vad_analyzer),
                stt,
                RefusalPhrases(self.gate),
                ClosingPhrases(self._caller_goodbye),
                aggregators.user(),
                llm,
                SharedPiperTTS(engines, timeline=self.timeline),
                self.announcer,
                self.transport.output(),
                self.gate,
                *([self.recorder.buffer] if self.recorder else []),
                aggregators.assistant(),
            ]
        )

    def _watch_turns(self, aggregators: LLMContextAggregatorPair) -> None:
        """Record each caller and agent turn; the agent's goodbye ends the call."""

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
                    await self.link.socket.send_text(message)
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
        """Its first chunk left at ``at``: the clock starts (the gate opens once it is heard)."""
        self._clock.sending(at, self.announcer.duration_s)

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

    async def hang_up(self, by: str) -> None:
        """End the call from outside it: the farewell, then the hang-up (as the end-call tool)."""
        await self._say_and_end(FAREWELL, by=by, reason="hang-up command")

    async def stop_recording(self, how: str) -> bool:
        """Stop recording as on the caller's objection (captured data deleted, audited).

        ``False`` when the call records nothing, or no longer does.
        """
        if (self.recorder is None and self.transcript is None) or self.gate.objected:
            return False
        await self.gate.object(how)
        return True

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
            asyncio.create_task(self._keep_alive(self.link.keepalive))
            if self.link.keepalive
            else None
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
                await self.store.advance(self.call.call_id, CallState.IN_PROGRESS, time.time())
            except Exception:
                log.exception("could not update call state")
            if await self._prepare_announcement():
                await self._run_pipeline()
            else:
                self._ending = True
                with contextlib.suppress(Exception):  # the caller may have gone already
                    await self.link.socket.close()
            if self._ending and self.link.hang_up is not None:
                try:
                    await self.link.hang_up()
                except Exception as e:  # the carrier ends the call anyway when the socket closes
                    log.warning("carrier hang-up failed", extra={"error": str(e)})
        finally:
            await self._clock.stop()
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
