"""The consent gate, the call recorder and the transcript log.

Nothing reaches the recorder and nothing is written to the transcript before the gate opens,
and the gate opens only once the announcement (AI disclosure and recording notice) has played
to the caller: when the carrier acknowledges its playback, or from its duration
(voice/session.py). A caller who objects (DTMF 9, a spoken refusal, or the ``stop_recording``
tool) closes it for the rest of the call, and what was captured is deleted. Audio is sealed
segment by segment as it is captured (recordings/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    SystemFrame,
    TranscriptionFrame,
)
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from carriers.playback import STREAM_OFFSET
from recordings.crypto import Identity
from recordings.objects import RECORDING_FORMAT, EncryptedObjects, ObjectWriter
from voice.language import CallLanguage
from voice.phrases import refuses_recording

log = logging.getLogger(__name__)

OBJECTION_KEY = "9"
#: Seconds of audio per sealed segment (what a crash can lose at most).
SEGMENT_S = 1.0
RECORD_RATE = 8000


def is_refusal(text: str, language: str | CallLanguage = "en") -> bool:
    """Whether ``text`` refuses the recording (in ``language`` or English: voice.phrases)."""
    return refuses_recording(text, language)


class ConsentGate(FrameProcessor):
    """Drops every audio frame until :meth:`open`; notices the caller's objection.

    Sits after the output transport (where the audio the caller heard and the caller's own
    audio both pass) and before the recorder. Each caller frame carries its place in the
    caller's stream (stamped by the codec, :mod:`carriers.playback`), so the gate opens at a
    point of the caller's stream (where the announcement had played), not
    at a moment: caller audio from before that point that is still on its way through the
    pipeline is dropped too, and a frame that straddles it is cut.
    """

    def __init__(self, on_objection: Callable[[str], Awaitable[None]]) -> None:
        """Call ``on_objection(how)`` once when the caller objects."""
        super().__init__()
        self.is_open = False
        self.objected = False
        self.opened_at: float | None = None
        self._on_objection = on_objection
        #: The byte of the caller's stream from which its audio passes (once open).
        self.opened_at_input: int | None = None
        #: Bytes of caller audio that reached the gate.
        self.seen = 0

    def open(self, at_input: int | None = None) -> None:
        """Let audio through from byte ``at_input`` of the caller's stream, unless objected.

        Without ``at_input``, from the caller audio that reaches the gate next.
        """
        if not self.objected and not self.is_open:
            self.is_open = True
            self.opened_at = time.time()
            self.opened_at_input = self.seen if at_input is None else at_input

    async def object(self, how: str) -> None:
        """Close for good and report the objection (once)."""
        if self.objected:
            return
        self.objected = True
        self.is_open = False
        await self._on_objection(how)

    def close(self) -> None:
        """Close for good without an objection (a machine answered: nobody objected)."""
        self.objected = True
        self.is_open = False

    def _heard_part(self, frame: InputAudioRawFrame) -> InputAudioRawFrame | None:
        """The part of a caller frame from the gate's opening point on (None: nothing)."""
        start = frame.metadata.get(STREAM_OFFSET, self.seen)
        self.seen = start + len(frame.audio)
        if not self.is_open or self.opened_at_input is None:
            return None
        cut = self.opened_at_input - start
        if cut <= 0:
            return frame
        if cut >= len(frame.audio):
            return None
        cut += cut % 2  # whole 16-bit samples
        return InputAudioRawFrame(
            audio=frame.audio[cut:], sample_rate=frame.sample_rate, num_channels=frame.num_channels
        )

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Gate audio; watch for DTMF 9."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame) and str(frame.button.value) == OBJECTION_KEY:
            await self.object("dtmf")
        if isinstance(frame, InputAudioRawFrame):
            heard = self._heard_part(frame)
            if heard is None:
                return
            frame = heard
        elif isinstance(frame, OutputAudioRawFrame) and not self.is_open:
            return
        await self.push_frame(frame, direction)


@dataclass
class UnheardSpeechFrame(SystemFrame):
    """What the caller said before the announcement had played, for the refusal check only.

    Not a ``TranscriptionFrame``: :class:`RefusalPhrases` consumes it, so it never reaches the
    closing-phrase check, the LLM context, the transcript or the call's turns. A system frame,
    so an interruption cannot drop an objection. The text stays out of its ``repr``.
    """

    text: str = field(repr=False)


class RefusalPhrases(FrameProcessor):
    """After STT: reports a spoken refusal of the recording.

    The words of a transcription still reach the LLM, so the agent can acknowledge them.
    Speech from before the announcement had played (:class:`UnheardSpeechFrame`) is checked
    and goes no further: nothing of it is stored or answered.
    """

    def __init__(self, gate: ConsentGate, language: str | CallLanguage = "en") -> None:
        """Report to ``gate`` a refusal said in ``language`` (the call's, or English)."""
        super().__init__()
        self._gate = gate
        self._language = language

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Check each transcription, and what was said before the announcement had played."""
        await super().process_frame(frame, direction)
        if isinstance(frame, UnheardSpeechFrame):
            if is_refusal(frame.text, self._language):
                await self._gate.object("spoken")
            return
        if isinstance(frame, TranscriptionFrame) and is_refusal(frame.text, self._language):
            await self._gate.object("spoken")
        await self.push_frame(frame, direction)


class CallRecorder:
    """Seals the gated audio of one call into an encrypted recording (stereo, 8 kHz).

    Creating the object, storing a segment, finalizing and discarding take turns on one lock:
    a discard that arrives while the object is being created or a segment stored waits for it
    and then deletes it, and nothing is stored after a discard.
    """

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
        self._lock = asyncio.Lock()
        #: The deletion a discard started (it outlives a cancelled caller).
        self._deleting: asyncio.Future[None] | None = None
        self.buffer.add_event_handler("on_audio_data", self._on_audio)

    async def start(self) -> None:
        """Create the encrypted object and start taking audio (the gate is open)."""
        async with self._lock:
            if self.writer is not None or self.discarded:
                return
            self.writer = await self.objects.create(
                self.identity,
                format=RECORDING_FORMAT,
                started_at=repr(time.time()),
                expires_at=repr(self.expires_at),
            )
        if not self.discarded:
            await self.buffer.start_recording()

    async def _on_audio(self, _proc: Any, audio: bytes, _rate: int, _channels: int) -> None:
        if self.discarded or not audio:
            return  # checked before the lock too: a discard's own flush must not wait for it
        async with self._lock:
            if self.writer is None or self.discarded:
                return
            try:
                await self.writer.append(audio)
            except Exception:
                log.exception("recording segment could not be stored")

    async def finish(self) -> None:
        """Flush the last audio and finalize the object (or see a discard through)."""
        if self._deleting is not None:
            await self._deleting
        if self.writer is None or self.discarded:
            return
        await self.buffer.stop_recording()  # its last audio goes through _on_audio (the lock)
        async with self._lock:
            if self.writer is not None and not self.discarded:
                await self.writer.finalize()

    async def discard(self) -> None:
        """Stop and delete what was recorded, including a segment being stored.

        The deletion runs to its end even if the call is cancelled meanwhile (the caller hung
        up); :meth:`finish` waits for it.
        """
        self.discarded = True  # a write waiting for the lock stores nothing
        if self._deleting is None:
            self._deleting = asyncio.ensure_future(self._delete())
        await asyncio.shield(self._deleting)

    async def _delete(self) -> None:
        if self.writer is not None:
            await self.buffer.stop_recording()  # its flush sees the flag and stores nothing
        async with self._lock:
            if self.writer is not None:
                self.writer.finished = True
            await self.objects.delete_identity(self.identity)
