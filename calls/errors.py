"""Errors of the call store; each carries a stable ``code``."""


class CallError(Exception):
    """Base error of the call store."""

    code = "call_error"


class UnknownCallState(CallError, ValueError):
    """A state that is not a :class:`~calls.state.CallState` (a carrier's unexpected status)."""

    code = "call_state_unknown"


class CallStoreIncomplete(CallError, RuntimeError):
    """The store was built without what the operation needs (a key ring, encrypted objects)."""

    code = "call_store_incomplete"
