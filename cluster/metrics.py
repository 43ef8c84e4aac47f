"""Prometheus metrics of a process in a cluster: heartbeats, lost processes' calls, commands."""

from __future__ import annotations

from prometheus_client import Counter

HEARTBEATS = Counter(
    "bonmoniq_node_heartbeats_total",
    "Renewals of this process's lease in the state store, by result (ok, failed).",
    ["result"],
)
REAPED_CALLS = Counter(
    "bonmoniq_node_calls_reaped_total",
    "Calls of lost processes that this process ended (state failed, event node_lost).",
)
COMMANDS = Counter(
    "bonmoniq_cluster_commands_total",
    "Live-call commands sent from this process, by action and result (hung_up, "
    "recording_stopped, not_recording, call_not_live, command_timeout, transfer_unavailable, "
    "error).",
    ["action", "result"],
)
