"""Default limits of a tenant, and the per-process cap on calls."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Calls one process holds per usable CPU core within the latency rule (BENCHMARKS.md: on 2
#: cores, 2 calls keep the p95 under twice the single-call p50; 4 calls do not).
CALLS_PER_CORE = 1


def default_max_calls() -> int:
    """The measured capacity of this process: its usable CPU cores times :data:`CALLS_PER_CORE`."""
    return max(1, len(os.sched_getaffinity(0)) * CALLS_PER_CORE)


class LimitSettings(BaseSettings):
    """Per-tenant defaults (a tenant's own limits override the outbound ones) and caps."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    calls_per_minute: int = Field(
        default=10, ge=0, description="Default per-tenant limit: outbound calls placed a minute."
    )
    concurrent_calls: int = Field(
        default=5, ge=0, description="Default per-tenant limit: outbound calls open at once."
    )
    daily_spend_cents: int = Field(
        default=1000, ge=0, description="Default per-tenant cap: outbound spend a day (UTC)."
    )
    outbound_cents_per_minute: int = Field(
        default=2, ge=0, description="What an outbound minute costs, for the spend cap."
    )
    config_writes_per_minute: int = Field(
        default=30,
        ge=1,
        description="Per-tenant limit on configuration writes (agents, numbers, keys): a token "
        "bucket of this many, refilled at this rate a minute; beyond it 429 rate_limited.",
    )
    max_calls: int = Field(
        default_factory=default_max_calls,
        ge=1,
        description="Calls in progress in this process at once; an inbound call beyond it gets "
        "its carrier's busy answer and /readyz answers 503 at_capacity. Unset: the usable CPU "
        "cores times CALLS_PER_CORE (1, the capacity measured in BENCHMARKS.md).",
    )
    inbound_concurrent_calls: int = Field(
        default=8,
        ge=0,
        description="Per-tenant limit: inbound calls in progress at once; beyond it the "
        "carrier's busy answer.",
    )
