"""The call pipeline: shared speech models, one pipecat pipeline per call, the call store."""

from calls.events import STAGE_ORDER, CallEvent, CallEventType, current_call_id, order_violations
from calls.store import CallRecord, CallStore, Turn

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
