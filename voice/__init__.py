"""The call pipeline: shared speech models, one pipecat pipeline per call, the call store."""

from voice.calls import CallRecord, CallStore, Turn
from voice.events import STAGE_ORDER, CallEvent, CallEventType, current_call_id, order_violations

__all__ = [
    "STAGE_ORDER",
    "CallEvent",
    "CallEventType",
    "CallRecord",
    "CallStore",
    "Turn",
    "current_call_id",
    "order_violations",
]
