"""The consent gate, the call recorder and the transcript log.

Nothing reaches the recorder and nothing is written to the transcript before the gate opens,
and the gate opens only when the output transport reports that the announcement (AI disclosure
and recording notice) has finished playing to the caller. A caller who objects (DTMF 9, a
spoken refusal, or the ``stop_recording`` tool) closes it for the rest of the call, and what was
captured is deleted. Audio is sealed segment by segment as it is captured (recordings/).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
)
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from recordings.crypto import Identity
from recordings.objects import RECORDING_FORMAT, EncryptedObjects, ObjectWriter

log = logging.getLogger(__name__)

#: What a caller says to refuse the recording.
REFUSAL = re.compile(
    r"\b(do ?n[o']t|do not|stop|no) (record|recording)\b|\bi (object|don'?t consent)\b"
    r"|\bdon'?t want (this|to be|it) recorded\b",
    re.IGNORECASE,
)
OBJECTION_KEY = "9"
#: Seconds of audio per sealed segment (what a crash can lose at most).
SEGMENT_S = 1.0
RECORD_RATE = 8000


def is_refusal(text: str) -> bool:
    """Whether ``text`` refuses the recording."""
    return bool(REFUSAL.search(text))


class ConsentGate(FrameProcessor):
    """Drops every audio frame until :meth:`open`; notices the caller's objection.

    Sits after the output transport (where the audio the caller heard and the caller's own
    audio both pass) and before the recorder.
    """

    def __init__(self, on_objection: Callable[[str], Awaitable[None]]) -> None:
        """Call ``on_objection(how)`` once when the caller objects."""
        super().__init__()
        self.is_open = False
        self.objected = False
        self.opened_at: float | None = None
        self._on_objection = on_objection

    def open(self) -> None:
        """Let audio through (the announcement has played), unless the caller objected."""
        if not self.objected and not self.is_open:
            self.is_open = True
            self.opened_at = time.time()

    async def object(self, how: str) -> None:
        """Close for good and report the objection (once)."""
        if self.objected:
            return
        self.objected = True
        self.is_open = False
        await self._on_objection(how)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Gate audio; watch for DTMF 9."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame) and str(frame.button.value) == OBJECTION_KEY:
            await self.object("dtmf")
        if isinstance(frame, InputAudioRawFrame | OutputAudioRawFrame) and not self.is_open:
            return
        await self.push_frame(frame, direction)


class RefusalPhrases(FrameProcessor):
    """After STT: reports a spoken refusal of the recording.

    The words still reach the LLM, so the agent can acknowledge them.
    """

    def __init__(self, gate: ConsentGate) -> None:
        """Report to ``gate``."""
        super().__init__()
        self._gate = gate

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Check each transcription."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and is_refusal(frame.text):
            await self._gate.object("spoken")
        await self.push_frame(frame, direction)


class CallRecorder:
    """Seals the gated audio of one call into an encrypted recording (stereo, 8 kHz)."""

    def __init__(self, objects: EncryptedObjects, identity: Identity, expires_at: float) -> None:
        """Record as ``identity``, to be deleted after ``expires_at``."""
        self.objects, self.identity, self.expires_at = objects, identity, expires_at
        self.buffer = AudioBufferProcessor(
            sample_rate=RECORD_RATE,
            num_channels=2,
            buffer_size=int(RECORD_RATE * 2 * SEGMENT_S),
        )
        self.writer: ObjectWriter | None = None
        self.discarded = False
        self.buffer.add_event_handler("on_audio_data", self._on_audio)

    async def start(self) -> None:
        """Create the encrypted object and start taking audio (the gate is open)."""
        if self.writer is not None or self.discarded:
            return
        self.writer = await self.objects.create(
            self.identity, format=RECORDING_FORMAT, started_at=repr(time.time()),
            expires_at=repr(self.expires_at),
        )  # fmt: skip
        await self.buffer.start_recording()

    async def _on_audio(self, _proc: Any, audio: bytes, _rate: int, _channels: int) -> None:
        if self.writer is None or self.discarded or not audio:
            return
        try:
            await self.writer.append(audio)
        except Exception:
            log.exception("recording segment could not be stored")

    async def finish(self) -> None:
        """Flush the last audio and finalize the object."""
        if self.writer is None or self.discarded:
            return
        await self.buffer.stop_recording()
        await self.writer.finalize()

    async def discard(self) -> None:
        """Stop and delete what was recorded."""
        self.discarded = True
        if self.writer is not None:
            await self.buffer.stop_recording()
            await self.writer.discard()
