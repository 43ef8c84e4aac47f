"""Prometheus metrics of the state store (served at ``/metrics`` by the API)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["REDIS_FAILOVERS"]

REDIS_FAILOVERS = Counter(
    "bonmoniq_redis_failovers_total",
    "Times the Redis master this process talks to changed (a Sentinel failover seen).",
)
