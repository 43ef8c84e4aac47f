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
    Frame,
    FunctionCallResultProperties,
    LLMUpdateSettingsFrame,
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
from pipecat.services.settings import LLMSettings as ModelSettings
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_mute import (
    FunctionCallUserMuteStrategy,
    MuteUntilFirstBotCompleteUserMuteStrategy,
)
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
from recordings.subjects import masked
from recordings.transcripts import TranscriptLog, TurnRecord
from routing.directory import Agent
from voice.announcement import announcement_for, dialled, is_default, missing_parts
from voice.digits import DigitCollector
from voice.engines import PHONE_RATE, Engines
from voice.errors import TransferRefused, TransferUnavailable, VoiceError
from voice.language import CallLanguage
from voice.media import CarrierLink
from voice.metrics import ACTIVE_CALLS, CALLS, TurnTimeline
from voice.observer import CallObserver
from voice.playback import HeardClock
from voice.processors import (
    Announcer,
    ClosingPhrases,
    LanguageSwitch,
    PersonRequests,
    is_closing,
)
from voice.prompt import greeting, said, system_prompt
from voice.recorder import CallRecorder, ConsentGate, RefusalPhrases
from voice.services import SharedSileroVAD, SharedTTS, SharedWhisperSTT
from voice.settings import CallSettings
from voice.tools import InCallTools, ToolRunner, context_tools
from voice.transfer import Outbox, TransferDesk, TransferPlan, summarize
from voice.turns import SpeculativeTurnStop
from voice.voicemail import GREETING_WAIT_S, PAUSE_S, VoicemailMute, action_for, message_text

log = logging.getLogger(__name__)

#: Whisper reads 16 kHz; the carrier's 8 kHz mu-law is resampled once on the way in.
STT_RATE = 16000
#: After the closing phrase at the maximum length, how long the pipeline may take to say it
#: and end on its own before it is cancelled (well inside the carrier's grace period).
END_GRACE_S = 15.0
_MAX_REJECTED_EVENTS = 20
#: How often a carrier that needs it hears that a silent call is still alive.
KEEPALIVE_S = 10.0
_LOG_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclass(frozen=True)
class SessionDeps:
    """What every call's session takes from the platform (one for the process).

    ``llm`` gives the answers' knobs (length, sentences, temperature); ``objects`` stores the
    encrypted recording and transcript (per the agent's settings, once the consent gate opens);
    ``transfers`` checks and makes transfers to a person; ``outbox`` takes the tenant's events.
    """

    store: CallStore
    engines: Engines
    settings: CallSettings
    llm: LLMSettings
    objects: EncryptedObjects | None = None
    transfers: TransferDesk | None = None
    outbox: Outbox | None = None
    #: Runs the agents' HTTP tools (integrations/tools.py); None: they fail politely.
    tools: ToolRunner | None = None


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
        number = dialled(call.direction, call.from_number, call.to_number)
        #: The call's language: the agent's, or (``auto``) the opening one until the caller's
        #: first heard words fix it.
        self.language = CallLanguage(agent.language, number)
        self.language.on_fix(self._language_fixed)
        #: What the platform says itself on this call, in the call's language.
        self.say = said(agent, self.language.code)
        #: The announcement this call plays (set when its audio is ready).
        self.announcement = agent.announcement.strip()
        self.transport = transport
        self.link = link
        #: The rate the agent's audio goes out at (the carrier's, or WebRTC's wideband).
        self.rate = link.rate
        self.store = deps.store
        self.engines = deps.engines
        #: The voice the call opens with: the agent's, else its language's default.
        self._opening_voice = deps.engines.voices.voice_for(agent.voice, self.language.code)
        self._deps = deps
        self._ending = False
        self._media_over = False  # the pipeline has ended: commands no longer apply
        self._voicemail = False  # a machine answered: no conversation, only its message
        self._cut = False  # the maximum length cancelled the pipeline
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rejected = 0
        #: A transfer is under way (nothing more is captured) / done (the carrier bridged).
        self._handing_over = False
        self._handed_over = False
        self._transfer_lock = asyncio.Lock()
        self._hand_over_task: asyncio.Task[None] | None = None
        #: The conversation so far (role, text), for a warm transfer's summary.
        self._said: list[tuple[str, str]] = []
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
            b"", self.rate, self._announcement_started, self._announcement_sending
        )
        self.pipeline = self._build_pipeline()
        self.worker = PipelineWorker(
            self.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=STT_RATE,
                audio_out_sample_rate=self.rate,
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

        transport in -> keypad -> VAD -> Whisper -> refusal and closing phrases -> user turn ->
        LLM -> Piper -> announcer -> transport out -> consent gate -> recorder -> agent turn.
        """
        settings, answers, engines = self._deps.settings, self._deps.llm, self.engines
        vad_analyzer = SharedSileroVAD(engines.silero, settings.vad_params())
        self.tts = SharedTTS(engines, voice=self._opening_voice, timeline=self.timeline)
        stt = SharedWhisperSTT(
            engines,
            self.language,
            vad=vad_analyzer if settings.early_stt else None,
            heard_from=lambda: self.heard_at,
            ttfs_p99_latency=2.0,
        )
        llm = self.llm = create_llm_service(
            engines.llm,
            system=system_prompt(self.agent, self.language.code),
            max_tokens=answers.max_tokens,
            max_sentences=answers.max_sentences,
            temperature=answers.temperature,
            unanswered=self.say.tool_trouble,
        )
        self.digits = DigitCollector(
            self.agent.dtmf,
            on_digits=self._caller_keys,
            on_person=self._caller_presses_person,
            can_transfer=lambda: self.can_transfer and not self._handing_over,
            holding=lambda: self._handing_over,
        )
        tools = InCallTools(
            self.agent,
            self.call.tenant,
            self.call.call_id,
            self._deps.tools,
            self.event,
            language=lambda: self.language.code,
        )
        tools.register(llm, self.digits)
        if "end_call" in self.agent.tools:
            llm.register_function("end_call", self._end_call_tool)
        llm.register_function("stop_recording", self._stop_recording_tool)
        if self.transfer_tool:
            llm.register_function("transfer", self._transfer_tool)
        turn_stop: BaseUserTurnStopStrategy = (
            SpeculativeTurnStop(user_speech_timeout=settings.turn_timeout_secs)
            if settings.speculate
            else SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=settings.turn_timeout_secs)
        )
        aggregators = LLMContextAggregatorPair(
            LLMContext(tools=context_tools(self.agent, self.transfer_tool)),
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(
                    start=[VADUserTurnStartStrategy()],
                    stop=[turn_stop],
                ),
                # The announcement is not interruptible: the caller must hear all of it. A
                # running tool is not cancelled by the caller's voice; the hold phrase of a
                # transfer is heard whole and nothing reaches the model meanwhile.
                user_mute_strategies=[
                    MuteUntilFirstBotCompleteUserMuteStrategy(),
                    FunctionCallUserMuteStrategy(),
                    VoicemailMute(lambda: self._voicemail or self._handing_over),
                ],
            ),
        )
        self._watch_turns(aggregators)
        return Pipeline(
            [
                self.transport.input(),
                self.digits,
                VADProcessor(vad_analyzer=vad_analyzer),
                stt,
                LanguageSwitch(self.language, self._switch_frames),
                RefusalPhrases(self.gate, self.language),
                PersonRequests(
                    self.language,
                    self._caller_asks_person,
                    lambda: self.can_transfer,
                    lambda: self._handing_over,
                ),
                ClosingPhrases(self._caller_goodbye, self.language),
                aggregators.user(),
                llm,
                self.tts,
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
            if text and is_closing(text, self.language) and not self._ending:
                self._ending = True
                await self.event(
                    CallEventType.HANGUP_REQUESTED, by="agent", reason="closing phrase"
                )
                await self.worker.queue_frame(EndFrame())

    # -- recording what happens ---------------------------------------------------------

    async def event(self, kind: CallEventType, **data: Any) -> None:
        """Record a lifecycle event; a store failure is logged, never raised into the call."""
        # A field named like a LogRecord attribute ("name", "msg") would make logging raise.
        fields = {f"{k}_" if k in _LOG_RECORD_FIELDS else k: v for k, v in data.items()}
        log.info("call event", extra={"event": str(kind), **fields})
        try:
            await self.store.add_event(CallEvent(kind, self.call.call_id, time.time(), data))
        except Exception:
            log.exception("could not store call event", extra={"event": str(kind)})

    async def _turn(self, role: str, text: str, interrupted: bool = False) -> None:
        if self._handing_over:  # nothing after the hand-over is captured
            return
        log.info("turn", extra={"role": role, "chars": len(text), "interrupted": interrupted})
        self._said.append((role, text))
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

    @property
    def voice(self) -> str:
        """The voice the call speaks with now (the TTS falls back to it if a new one fails)."""
        return self.tts.voice

    def _language_fixed(self, language: CallLanguage) -> None:
        """The caller's first words fixed the call's language: phrases and voice follow it.

        Called from the STT before the transcription goes on: the detectors (which read the
        call's language), the phrases and the voice are the new language's from then on; the
        model's instruction and the announcement follow in :meth:`_switch_frames`.
        """
        code = language.code
        self.say = said(self.agent, code)
        self.llm.set_unanswered(self.say.tool_trouble)
        voice = self.engines.voices.voice_for(self.agent.voice, code)
        if voice != self.voice:
            try:  # loaded off the event loop before the next sentence
                self.tts.use_voice(voice)
            except Exception:  # the call goes on in the voice it had
                log.exception("the voice of the caller's language is not installed")
        probability = round(language.probability or 0.0, 3)
        self._spawn(
            self.event(CallEventType.LANGUAGE_DETECTED, language=code, probability=probability)
        )
        self._spawn(self._store_language())

    def _switch_frames(self, code: str) -> list[Frame]:
        """What goes ahead of the caller's first words in another language than the opening one.

        The model told to answer in ``code``, and the announcement said again in it (whole,
        before the answer: not interruptible, not in the model's context).
        """
        number = dialled(self.call.direction, self.call.from_number, self.call.to_number)
        text = announcement_for(self.agent.announcement, code, number)
        speak = TTSSpeakFrame(text, append_to_context=False)
        speak.interruptible = False
        instruction = ModelSettings(system_instruction=system_prompt(self.agent, code))
        return [LLMUpdateSettingsFrame(delta=instruction), speak]

    async def _store_language(self) -> None:
        """Note the call's language on its record (a store failure is logged)."""
        try:
            await self.store.set_language(self.call.call_id, self.language.code)
        except Exception:
            log.exception("could not store the call's language")

    async def _announcement_started(self) -> None:
        await self.event(
            CallEventType.ANNOUNCEMENT_STARTED,
            text=self.announcement,
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
        if not self._voicemail:
            await self.worker.queue_frame(TTSSpeakFrame(greeting(self.agent, self.language.code)))

    async def _discard(self) -> None:
        """Delete what the recorder and the transcript captured."""
        for kept in (self.recorder, self.transcript):
            if kept is not None:
                try:
                    await kept.discard()
                except Exception:
                    log.exception("captured data could not be deleted")

    async def _objection(self, how: str) -> None:
        """The caller refused the recording: stop, delete what was captured, say so."""
        await self._discard()
        await self.event(CallEventType.RECORDING_OBJECTED, how=how)
        if self._on_objection is not None:
            try:
                await self._on_objection(how)
            except Exception:
                log.exception("objection could not be audited")
        if self.recorder is not None and not self._ending and not self._voicemail:
            await self.worker.queue_frame(TTSSpeakFrame(self.say.not_recorded))

    async def voicemail(self) -> str:
        """Act on the carrier's answering-machine detection, as the call's record says.

        A machine: what was captured is discarded (its greeting is someone's voice; nobody
        objected, so only the ``voicemail`` event says so) and the conversation stops;
        ``hang_up`` (and a fax) ends the call at once, ``leave_message`` says the disclosure
        and the message once the greeting has ended, then hangs up.
        """
        vm = await self.store.voicemail(self.call.call_id)
        if vm is None or vm.answered_by != "machine":
            return "conversation"
        action = action_for(vm.action, vm.result)
        if not self._voicemail:
            self._voicemail = True
            await self._emit("call.voicemail", {"answered_by": vm.answered_by, "action": action})
            if (self.recorder or self.transcript) is not None and not self.gate.objected:
                self.gate.close()
                await self._discard()
        if action == "hang_up":
            if not self._ending:
                self._ending = True
                await self.event(CallEventType.HANGUP_REQUESTED, by="platform", reason="voicemail")
                # Nobody listens: the pipeline stops now, queued audio unplayed; run() hangs up.
                await self.worker.cancel()
            return "hung_up"
        if vm.greeting_ended:
            await self._leave_message(vm.message)
            return "message_left"
        self._spawn(self._leave_message(vm.message, PAUSE_S if vm.final else GREETING_WAIT_S))
        return "waiting"

    async def _leave_message(self, message: str, after_s: float = 0.0) -> None:
        """Say the voicemail message and hang up, ``after_s`` from now unless the call ended."""
        deadline = time.monotonic() + after_s
        while time.monotonic() < deadline:
            if self._ending or self.worker.has_finished():
                return
            await asyncio.sleep(0.1)
        text = message_text(self.language.code, message)
        await self._say_and_end(text, by="platform", reason="voicemail message")

    @property
    def media_over(self) -> bool:
        """The call's media has ended: what is left is its bookkeeping."""
        return self._media_over

    async def hang_up(self, by: str) -> None:
        """End the call from outside it: the farewell, then the hang-up (as the end-call tool)."""
        await self._say_and_end(self.say.farewell, by=by, reason="hang-up command")

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
        await self._say_and_end(self.say.farewell, by="agent", reason="end_call tool")

    async def _caller_goodbye(self, text: str) -> None:
        await self._turn("caller", text)
        await self._say_and_end(self.say.farewell, by="caller", reason="closing phrase")

    async def _say_and_end(self, text: str, **data: Any) -> None:
        if self._ending or self._handing_over:
            return
        self._ending = True
        await self.event(CallEventType.HANGUP_REQUESTED, **data)
        await self.worker.queue_frames([TTSSpeakFrame(text), EndFrame()])

    # -- transfer to a person ------------------------------------------------------------

    @property
    def can_transfer(self) -> bool:
        """Whether this call can be handed to a person: a transfer number, a channel that can."""
        return (
            self._deps.transfers is not None
            and self.link.transfers
            and bool(self.agent.transfer_number)
        )

    @property
    def transfer_tool(self) -> bool:
        """Whether the model may call ``transfer`` (the agent lists it among its tools)."""
        return self.can_transfer and "transfer" in self.agent.tools

    async def transfer(self, by: str) -> str:
        """Admit a transfer of the caller to the agent's number; ``"transferring"``.

        ``by`` is what asked: ``tool``, ``phrase``, ``dtmf`` or ``api``. Refused (routing,
        limits, a failed check): the caller hears an apology, the call goes on, and the refusal
        is raised. Admitted: the hand-over (the hold phrase, the end of the recording and the
        transcript, the carrier) runs as a task of the session; its outcome is in the call's
        events and the ``call.transferred`` webhook.

        Raises:
            TransferUnavailable: the agent has no transfer number, or the call is ending.
            TransferRefused: routing, the limits or a failed check refused it (``code``).
        """
        desk = self._deps.transfers
        if desk is None or not self.agent.transfer_number:
            raise TransferUnavailable("the agent has no transfer number")
        if self._ending or self._handing_over or self._transfer_lock.locked():
            raise TransferUnavailable("the call is ending or already being transferred")
        async with self._transfer_lock:
            await self.event(CallEventType.TRANSFER_REQUESTED, by=by)
            try:
                plan = await desk.admit(self.call, self.agent)
            except Exception as e:
                refusal = (
                    e
                    if isinstance(e, (TransferRefused, TransferUnavailable))
                    else TransferRefused("transfer_failed", "the transfer could not be checked")
                )
                if not isinstance(e, VoiceError):
                    log.exception("transfer admission failed")
                await self.event(CallEventType.TRANSFER_REFUSED, code=refusal.code, by=by)
                if not self._ending:
                    await self.worker.queue_frame(TTSSpeakFrame(self.say.transfer_sorry))
                raise refusal from (None if refusal is e else e)
            if self._ending:  # the call began to end (goodbye, end_call, time) meanwhile
                await desk.cancel(self.call)
                await self.event(CallEventType.TRANSFER_REFUSED, code="call_ending", by=by)
                raise TransferUnavailable("the call ended while the transfer was checked")
            self._handing_over = True
        self._hand_over_task = asyncio.get_running_loop().create_task(self._hand_over(plan, by))
        return "transferring"

    async def _hand_over(self, plan: TransferPlan, by: str) -> None:
        """Put the caller on hold, stop capturing and ask the carrier; the outcome recorded.

        Once the carrier took the transfer nothing undoes it. A carrier that does not take
        it: an apology, then the call ends (and is hung up).
        """
        desk = self._deps.transfers
        assert desk is not None
        summary = asyncio.ensure_future(self._summary()) if plan.mode == "warm" else None
        try:
            await self._say_and_wait(self.say.hold)
            await self._stop_capture()
            audio = await summary if summary is not None else None
            if self.worker.has_finished():  # the caller hung up: nobody to hand over
                raise TransferUnavailable("the call ended before the hand-over")
            await desk.hand_over(self.call, plan, audio)
        except BaseException as e:
            if summary is not None:
                summary.cancel()
            if not isinstance(e, Exception):  # cancelled: the session is being torn down
                await desk.cancel(self.call)
                raise
            code = e.code if isinstance(e, VoiceError) else "carrier_failed"
            if not isinstance(e, TransferRefused):  # the desk gave a refused one back itself
                if not isinstance(e, VoiceError):
                    log.exception("transfer hand-over failed")
                await desk.cancel(self.call)
            await self.event(CallEventType.TRANSFER_REFUSED, code=code, by=by)
            self._handing_over = False
            await self._say_and_end(
                self.say.transfer_failed, by="platform", reason="transfer failed"
            )
            return
        # The carrier took it: the call is the person's now, whatever happens below.
        self._handed_over = self._ending = True
        try:
            destination = masked(plan.number)
            await self.event(
                CallEventType.TRANSFERRED, destination=destination, mode=plan.mode, by=by
            )
            await self._emit(
                "call.transferred", {"destination": destination, "mode": plan.mode, "by": by}
            )
            await self.worker.queue_frame(EndFrame())
        except Exception:
            log.exception("transfer made; its record or the pipeline's end failed")

    async def _try_transfer(self, by: str) -> None:
        """Transfer from inside the call: a refusal was already said to the caller."""
        try:
            await self.transfer(by)
        except VoiceError as e:
            log.info("transfer not made", extra={"code": e.code, "by": by})
        except Exception:
            log.exception("transfer not made", extra={"by": by})

    async def _caller_keys(self, text: str, count: int) -> None:
        """A keypad sequence, on its way to the model: the caller's turn (digits never logged)."""
        await self._turn("caller", text)
        await self.event(CallEventType.DIGITS, count=count)

    async def _caller_presses_person(self) -> None:
        self._spawn(self._try_transfer("dtmf"))

    async def _caller_asks_person(self, text: str) -> None:
        await self._turn("caller", text)
        self._spawn(self._try_transfer("phrase"))

    async def _transfer_tool(self, params: FunctionCallParams) -> None:
        """Admit the transfer first: the model is told what really happened."""
        try:
            result = await self.transfer("tool")
            outcome: dict[str, Any] = {"ok": True, "result": result}
        except VoiceError as e:  # a refusal's apology is said already
            outcome = {"ok": False, "refused": e.code}
        except Exception:
            log.exception("transfer tool failed")
            outcome = {"ok": False, "refused": "transfer_failed"}
        await params.result_callback(
            outcome, properties=FunctionCallResultProperties(run_llm=False)
        )

    async def _say_and_wait(self, text: str) -> None:
        """Say ``text`` whole, after any speech under way, and return once it has played.

        The phrase is not interruptible; each wait is bounded (by its length).
        """
        try:
            audio = await self.engines.phrase(text, self.rate, self.voice)
        except Exception:
            audio = b""
        duration = len(audio) / (self.rate * 2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        # The observer's flag follows the transport's speech frames: polled, bounded.
        while self._observer.bot_speaking and loop.time() - start < 30.0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        frame = TTSSpeakFrame(text, append_to_context=False)
        frame.interruptible = False
        await self.worker.queue_frame(frame)
        start = loop.time()
        while not self._observer.bot_speaking and loop.time() - start < 5.0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        while self._observer.bot_speaking and loop.time() - start < duration + 8.0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def _stop_capture(self) -> None:
        """End the recording and the transcript here: the person was not announced to."""
        for kept in (self.recorder, self.transcript):
            if kept is not None:
                try:
                    await kept.finish()
                except Exception:
                    log.exception("recording or transcript could not be finalized")

    async def _summary(self) -> bytes | None:
        """The warm transfer's summary as 8 kHz PCM, or ``None`` when it cannot be spoken."""
        text = await summarize(self.engines.llm, list(self._said))
        try:
            return await asyncio.to_thread(self.engines.synthesize, text, PHONE_RATE)
        except Exception:
            log.exception("transfer summary could not be synthesized")
            return None

    async def _time_limit(self) -> None:
        """End the call at its maximum length: the closing phrase, then the hang-up for sure.

        A pipeline that has not ended ``END_GRACE_S`` after the phrase (a caller talking over
        it, a stuck model) is cancelled; either way the carrier is told to hang up.
        """
        await asyncio.sleep(self.max_seconds)
        log.info("call reached its maximum length", extra={"max_seconds": self.max_seconds})
        if not self._ending:
            await self._say_and_end(
                self.say.time_up,
                by="platform",
                reason="maximum length",
                max_seconds=self.max_seconds,
            )
        await asyncio.sleep(END_GRACE_S)
        log.warning("call did not end after its closing phrase: cancelled")
        self._ending = self._cut = True
        await self.worker.cancel()

    async def _fail(self, error: str) -> None:
        log.error("call pipeline error", extra={"error": error})
        await self.event(CallEventType.ERROR, error=error[:500])
        await self._say_and_end(self.say.apology, by="platform", reason="error")

    async def _prepare_announcement(self) -> bool:
        """Give the announcer its audio: from the phrase cache, or synthesized now.

        The bounded cache may have dropped the phrase since the call was answered; then it is
        synthesized again in a worker thread. False (the call cannot go on) when there is no
        audio: a call never runs without its whole announcement.
        """
        own = self.agent.announcement.strip()
        if own and not is_default(own) and missing_parts(own, self.agent.language):  # (auto: any)
            # Stored before announcements were checked: the language's default says it all.
            log.warning("agent announcement incomplete: the default one is played")
        # The agent's own, else the default of its language and of the country dialled.
        number = dialled(self.call.direction, self.call.from_number, self.call.to_number)
        text = self.announcement = announcement_for(own, self.language.opening, number)
        try:
            audio = await self.engines.phrase(text, self.rate, self.voice) if text else b""
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

    def _parties(self) -> dict[str, str]:
        """The call as a webhook tells it (the customer's own numbers: sealed in the outbox)."""
        c = self.call
        return {"direction": c.direction, "agent_id": c.agent, "carrier": c.carrier,
                "from": c.from_number, "to": c.to_number}  # fmt: skip

    async def _emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for the tenant's webhooks (the outbox never raises)."""
        if self._deps.outbox is not None:
            await self._deps.outbox.emit(self.call.tenant, event, self.call.call_id, data)

    async def run(self) -> None:
        """Run the call until either side hangs up."""
        token = current_call_id.set(self.call.call_id)
        ACTIVE_CALLS.inc()
        try:
            await self.event(CallEventType.MEDIA_CONNECTED, agent=self.agent.name)
            await self._emit("call.started", self._parties())
            await self._store_language()
            try:
                await self.store.advance(self.call.call_id, CallState.IN_PROGRESS, time.time())
            except Exception:
                log.exception("could not update call state")
            try:
                if await self._prepare_announcement():
                    await self._run_pipeline()
                else:
                    self._ending = True
                    with contextlib.suppress(Exception):  # the caller may have gone already
                        await self.link.socket.close()
            finally:
                self._media_over = True
            if self._hand_over_task is not None:  # its outcome decides the hang-up
                await asyncio.wait([self._hand_over_task])
            # A transferred call goes on at the carrier, bridged to the person: never hung up.
            if self._ending and not self._handed_over and self.link.hang_up is not None:
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
            if self.recorder is not None and self.recorder.writer and not self.recorder.discarded:
                path = f"/v1/calls/{self.call.call_id}/recording"
                await self._emit("recording.ready", {"recording": path})
            ACTIVE_CALLS.dec()
            CALLS.labels("ended_by_platform" if self._ending else "ended_by_caller").inc()
            pending = list(self._tasks)
            if self._hand_over_task is not None:
                pending.append(self._hand_over_task)
            for task in pending:
                try:
                    await task
                except asyncio.CancelledError:  # never keeps MEDIA_CLOSED unwritten
                    log.warning("call task cancelled")
                except Exception:
                    log.exception("call task failed")
            await self.event(CallEventType.MEDIA_CLOSED)
            current_call_id.reset(token)
