"""Settings of the calls to customers' systems: the egress allow-list, retries and caps."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IntegrationSettings(BaseSettings):
    """``BONMONIQ_EGRESS_*``, ``BONMONIQ_WEBHOOK_*`` and ``BONMONIQ_TOOL_*``."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    egress_allow: list[str] = Field(
        default_factory=list,
        description="CIDRs and host names a tool or webhook URL may reach although they are "
        'not public (JSON list, e.g. ["10.20.0.0/16", "crm.internal"]). Empty: public '
        "addresses only.",
    )
    egress_ca_file: Path | None = Field(
        default=None,
        description="Extra CA certificates (PEM) trusted for tool and webhook HTTPS, besides "
        "the system's.",
    )
    tool_response_max_bytes: int = Field(
        default=16 * 1024, ge=256, description="A tool's answer is read up to this size."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one webhook attempt may take."
    )
    webhook_response_max_bytes: int = Field(
        default=64 * 1024, ge=256, description="How much of an endpoint's answer is read."
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0,
        gt=0,
        description="First retry delay; each retry waits a random time up to base x 2^n.",
    )
    webhook_retry_cap_seconds: float = Field(
        default=3600.0, gt=0, description="Longest wait between two attempts."
    )
    webhook_retry_window_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="A delivery is retried this long after its first attempt; an endpoint "
        "failing this long without a success is disabled.",
    )
    webhook_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A claimed delivery is another process's to retry after this long (a "
        "process that died mid-attempt); longer than an attempt (call.ended's first attempt asks "
        "the LLM for the summary and the fields first).",
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the delivery worker looks for due deliveries."
    )
    webhook_keep_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="How long a finished delivery (its sealed payload and attempts) is kept "
        "for listing and replay.",
    )
    webhook_call_ended_delay_seconds: float = Field(
        default=2.0,
        ge=0,
        description="call.ended is first attempted this long after the call ended, so the "
        "last turn of the transcript is stored.",
    )
