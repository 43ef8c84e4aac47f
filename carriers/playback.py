"""Playback acknowledgements: knowing when the caller has heard what was sent.

A carrier buffers the audio it is sent and plays it in real time, so "sent" is not "heard".
Twilio and Telnyx echo a ``mark`` message once the audio sent before it has played
(shared/docs/carriers.md); Sinch documents no such message. Each media codec counts the caller
audio it hands to the pipeline, so an acknowledgement also says where in the caller's stream
the caller had heard everything before the mark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipecat.frames.frames import InputAudioRawFrame, OutputTransportMessageFrame

#: ``frame.metadata`` key: the byte of the caller's stream (at the pipeline's input rate) at
#: which a caller audio frame starts. Processors downstream may drop frames (a muted user
#: aggregator does), so counting what reaches them would drift from the stream.
STREAM_OFFSET = "bonmoniq_stream_offset"


@dataclass
class PlaybackMarkFrame(OutputTransportMessageFrame):
    """Asks the carrier to report when the audio sent before this frame has played.

    ``message`` is the mark's name. An ``OutputTransportMessageFrame`` travels through the
    output transport in order with the audio, so the mark follows the last chunk before it.
    """


#: Told ``(mark name, caller-audio bytes handed to the pipeline when it came back)``.
OnPlayed = Callable[[str, int], None]


class PlaybackAcks:
    """What a media codec shares about playback: marks heard back and caller audio counted."""

    #: Whether the carrier echoes marks (the session otherwise times the playback itself).
    acknowledges_playback: bool = False

    def __init__(self) -> None:
        """Nothing received yet; nobody to tell."""
        #: Bytes of caller audio (at the pipeline's input rate) handed to the pipeline so far.
        self.received = 0
        self.on_played: OnPlayed | None = None

    def _counted(self, frame: InputAudioRawFrame) -> InputAudioRawFrame:
        """Stamp ``frame`` with its place in the caller's stream and count it; returns it."""
        frame.metadata[STREAM_OFFSET] = self.received
        self.received += len(frame.audio)
        return frame

    def _played(self, name: object) -> None:
        """The carrier reports that the audio before mark ``name`` has played."""
        if self.on_played is not None and isinstance(name, str):
            self.on_played(name, self.received)
