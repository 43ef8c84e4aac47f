"""Calls: each call's record, state and lifecycle events, and the store that keeps them in Redis.

Written by the webhooks, outbound calls, the media pipeline and the retention sweep alike.
"""

from calls.errors import CallError, CallStoreIncomplete, UnknownCallState
from calls.events import STAGE_ORDER, CallEvent, CallEventType, current_call_id, order_violations
from calls.records import CallRecord, Opened, Reservation, Turn, member, new_call_id
from calls.state import CallState
from calls.store import CallStore

__all__ = [
    "STAGE_ORDER",
    "CallError",
    "CallEvent",
    "CallEventType",
    "CallRecord",
    "CallState",
    "CallStore",
    "CallStoreIncomplete",
    "Opened",
    "Reservation",
    "Turn",
    "UnknownCallState",
    "current_call_id",
    "member",
    "new_call_id",
    "order_violations",
]
