"""The call pipeline: shared speech models, and one pipecat pipeline per call on its media.

``voice.transport`` takes a carrier's media socket from the HTTP edge (no web framework
here), checks the stream against the call store and runs a ``voice.session.CallSession``.
Those modules pull in pipecat and the models, so they are imported on their own.
"""

from voice.errors import AnnouncementIncomplete, PeerGone, VoiceError
from voice.settings import CallSettings

__all__ = ["AnnouncementIncomplete", "CallSettings", "PeerGone", "VoiceError"]
