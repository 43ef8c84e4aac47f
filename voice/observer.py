"""Watches a call's frames: barge-ins, and the stages of each caller turn."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from voice.metrics import TurnTimeline

log = logging.getLogger("voice.session")  # its lines are the session's


class CallObserver(BaseObserver):
    """Tells ``on_barge_in`` of each interruption (once) and times each caller turn's stages."""

    def __init__(self, timeline: TurnTimeline, on_barge_in: Callable[[], Awaitable[None]]) -> None:
        """Time turns on ``timeline``; ``on_barge_in`` is awaited when the caller interrupts."""
        super().__init__()
        self._timeline = timeline
        self._on_barge_in = on_barge_in
        #: Whether the agent is speaking (the keep-alive stays quiet meanwhile).
        self.bot_speaking = False

    async def on_push_frame(self, data: FramePushed) -> None:
        """Note what ``data``'s frame says about the turn or the agent's speech."""
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
            await self._on_barge_in()
