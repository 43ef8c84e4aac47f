"""Default limits of a tenant, and the per-process cap on calls."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        default=12,
        ge=1,
        description="Calls in progress in this process at once; an inbound call beyond it gets "
        "its carrier's busy answer.",
    )
    inbound_concurrent_calls: int = Field(
        default=8,
        ge=0,
        description="Per-tenant limit: inbound calls in progress at once; beyond it the "
        "carrier's busy answer.",
    )
