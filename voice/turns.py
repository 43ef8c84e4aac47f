"""The end of a caller's turn, answered speculatively while the caller may still go on."""

from __future__ import annotations

import logging

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.utils.string import TextPartForConcatenation, concatenate_aggregated_text

from voice.metrics import SPECULATIVE_ANSWERS

log = logging.getLogger(__name__)


class SpeculativeTurnStop(SpeechTimeoutUserTurnStopStrategy):
    """pipecat's speech-timeout turn end, with the answer started inside the pause window.

    The turn ends when the caller has been silent for the VAD's ``stop_secs`` plus
    ``user_speech_timeout`` (the window in which a caller may pause and go on). Waiting for
    that window before starting the LLM puts all of it on the caller's wait. Here, once the
    VAD has stopped and the transcript is in, the LLM starts at once on a provisional context
    (pipecat's speculative inference); its answer is held by the LLM service's speculation
    gate and released when the window closes with the same transcript. If the caller speaks
    again inside the window, the answer is withdrawn (generation stopped, nothing spoken,
    nothing in the context) and the turn goes on as before; its end is answered afresh.
    """

    def __init__(self, **kwargs: object) -> None:
        """As :class:`SpeechTimeoutUserTurnStopStrategy`."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._speculated: str | None = None
        self._parts: list[TextPartForConcatenation] = []

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """As the base strategy, plus: withdraw on speech, speculate on a transcript."""
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._withdraw("the caller went on")
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            # The LLM service withdrew it itself (it wanted a tool call): answer afresh.
            self._speculated = None
        result = await super().process_frame(frame)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._parts.append(
                TextPartForConcatenation(
                    frame.text, includes_inter_part_spaces=frame.includes_inter_frame_spaces
                )
            )
            await self._maybe_speculate()
        return result

    def _turn_text(self) -> str:
        """The turn's text exactly as the user aggregator will write it into the context.

        The speculative answer is generated on this text, and the LLM server keeps that prompt
        as its cached prefix: any other spelling (the raw transcripts start with a space) and
        the next turn's prompt would differ from it at this message, and the server would
        read the rest of the conversation again.
        """
        return concatenate_aggregated_text(self._parts)

    async def _reset(self, *, clear_vad_user_speaking: bool) -> None:
        await super()._reset(clear_vad_user_speaking=clear_vad_user_speaking)
        self._parts = []

    async def _maybe_speculate(self) -> None:
        """Start the answer if the turn is waiting only for the pause window to close."""
        if (
            not self._parts
            or self._speculated is not None
            or self._vad_user_speaking
            or not self._vad_stopped
            or self._user_speech_wait_done
        ):
            return
        self._speculated = self._turn_text()
        await self.trigger_user_turn_inference_triggered(
            speculation=UserTurnSpeculation(text=self._speculated)
        )

    async def _withdraw(self, why: str) -> None:
        if self._speculated is None:
            return
        self._speculated = None
        SPECULATIVE_ANSWERS.labels("withdrawn").inc()
        log.debug("speculative answer withdrawn: %s", why)
        await self.trigger_user_turn_speculation_cancelled()

    async def trigger_user_turn_stopped(
        self, *, enable_user_speaking_frames: bool | None = None
    ) -> None:
        """End the turn; keep the speculative answer if it answers this very transcript."""
        speculated, self._speculated = self._speculated, None
        if speculated is not None and speculated == self._turn_text():
            SPECULATIVE_ANSWERS.labels("kept").inc()
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames,
                confirms_speculation=True,
            )
            return
        if speculated is not None:
            self._speculated = speculated
            await self._withdraw("the transcript changed")
        await super().trigger_user_turn_stopped(
            enable_user_speaking_frames=enable_user_speaking_frames
        )

    async def handle_user_turn_stopped(self) -> None:
        """A turn that ended some other way (an interruption) leaves nothing held."""
        await self._withdraw("the turn ended elsewhere")
        await super().handle_user_turn_stopped()
