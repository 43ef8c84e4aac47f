"""Prometheus metrics of admission: what an operator scales a fleet of processes on.

No label carries a number, a tenant or a call: only the outcome and the cap that decided it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLS_ADMITTED = Counter(
    "bonmoniq_calls_admitted",
    "Inbound calls admitted or refused by this process; reason: the cap that refused "
    "(max_calls, inbound_concurrent_calls) or draining (empty when admitted).",
    ["result", "reason"],
)
CALLS_IN_PROGRESS = Gauge(
    "bonmoniq_calls_in_progress",
    "Calls counted against BONMONIQ_MAX_CALLS in this process: media sessions running, plus "
    "inbound calls answered here whose media stream has not arrived yet.",
)
MAX_CALLS = Gauge("bonmoniq_max_calls", "This process's cap on calls in progress.")
DRAINING = Gauge(
    "bonmoniq_draining", "1 while this process drains (takes no new calls before it exits)."
)


def count_admission(reason: str | None) -> None:
    """Count one inbound call admitted (``reason`` None) or refused for ``reason``."""
    if reason is None:
        CALLS_ADMITTED.labels("admitted", "").inc()
    else:
        CALLS_ADMITTED.labels("refused", reason).inc()


CARRIER_UP = Gauge(
    "bonmoniq_carrier_up",
    "1 while routing may use the carrier (configured, on the register, not marked down after "
    "its API failed), 0 while it is left out; as this process last refreshed it.",
    ["carrier"],
)
