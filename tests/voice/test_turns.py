"""The speculative end of turn, driven by the frames pipecat's user aggregator feeds it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.utils.asyncio.task_manager import TaskManager

from voice.turns import SpeculativeTurnStop

WINDOW = 0.15  # the strategy's user_speech_timeout in these tests


class Turn:
    """A strategy wired as the user aggregator wires it; what it emitted, in order."""

    def __init__(self) -> None:
        self.strategy = SpeculativeTurnStop(user_speech_timeout=WINDOW)
        self.emitted: list[tuple[str, Any]] = []
        self.stopped = asyncio.Event()

        @self.strategy.event_handler("on_user_turn_inference_triggered")
        async def _inference(_s: Any, speculation: Any) -> None:
            self.emitted.append(("inference", speculation.text if speculation else None))

        @self.strategy.event_handler("on_user_turn_speculation_cancelled")
        async def _cancelled(_s: Any) -> None:
            self.emitted.append(("cancelled", None))

        @self.strategy.event_handler("on_user_turn_stopped")
        async def _stopped(_s: Any, params: Any) -> None:
            self.emitted.append(("stopped", params.confirms_speculation))
            await self.strategy.handle_user_turn_stopped()  # as the controller does
            self.stopped.set()

    async def __aenter__(self) -> Turn:
        manager = TaskManager(loop=asyncio.get_running_loop())
        await self.strategy.setup(SimpleNamespace(task_manager=manager))  # type: ignore[arg-type]
        await self.strategy.handle_user_turn_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.strategy.cleanup()

    async def feed(self, *frames: Frame) -> None:
        for frame in frames:
            await self.strategy.process_frame(frame)

    async def end(self) -> list[tuple[str, Any]]:
        await asyncio.wait_for(self.stopped.wait(), 5)
        return self.emitted


def said(text: str) -> TranscriptionFrame:
    frame = TranscriptionFrame(text, "", "2026-11-26T00:00:00Z")
    frame.finalized = True  # segmented STT finalizes every transcript
    return frame


def vad_stop() -> VADUserStoppedSpeakingFrame:
    return VADUserStoppedSpeakingFrame(stop_secs=0.25)


async def test_the_answer_starts_inside_the_window_and_is_kept() -> None:
    # The speculative answer is asked with the text as the user aggregator writes it into the
    # context (no leading space): the LLM server's cached prompt then matches the next turn's.
    async with Turn() as turn:
        await turn.feed(VADUserStartedSpeakingFrame(), vad_stop(), said(" Are you open?"))
        # The LLM is already at work while the window runs.
        assert turn.emitted == [("inference", "Are you open?")]
        assert await turn.end() == [("inference", "Are you open?"), ("stopped", True)]


async def test_a_caller_who_goes_on_withdraws_the_answer() -> None:
    async with Turn() as turn:
        await turn.feed(VADUserStartedSpeakingFrame(), vad_stop(), said(" What time do you open"))
        await turn.feed(VADUserStartedSpeakingFrame())  # inside the window
        await asyncio.sleep(WINDOW * 2)
        assert turn.emitted == [("inference", "What time do you open"), ("cancelled", None)]
        await turn.feed(vad_stop(), said(" on Saturday?"))
        emitted = await turn.end()
        # The second answer is asked on both transcripts (pipecat joins them with spaces).
        assert [(k, " ".join(v.split()) if isinstance(v, str) else v) for k, v in emitted] == [
            ("inference", "What time do you open"),
            ("cancelled", None),
            ("inference", "What time do you open on Saturday?"),
            ("stopped", True),
        ]


async def test_a_transcript_after_the_window_is_answered_at_once() -> None:
    async with Turn() as turn:
        await turn.feed(VADUserStartedSpeakingFrame(), vad_stop())
        await asyncio.sleep(WINDOW * 2)  # Whisper slower than the window
        await turn.feed(said(" Are you open?"))
        assert await turn.end() == [("inference", None), ("stopped", False)]


async def test_an_answer_the_llm_withdrew_is_asked_again_at_the_end() -> None:
    async with Turn() as turn:
        await turn.feed(VADUserStartedSpeakingFrame(), vad_stop(), said(" Hang up."))
        # The LLM service withdraws a speculation that wants a tool call.
        await turn.feed(EagerEndOfTurnCancelFrame())
        assert await turn.end() == [
            ("inference", "Hang up."),
            ("inference", None),
            ("stopped", False),
        ]


async def test_no_answer_before_the_vad_has_stopped() -> None:
    async with Turn() as turn:
        # A transcript while the VAD still hears speech (a streaming STT would send one).
        await turn.feed(VADUserStartedSpeakingFrame(), said(" Are"))
        assert turn.emitted == []
