"""Settings of the state store: where Redis is, and the prefix of every key."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    """``BONMONIQ_REDIS_URL``, ``BONMONIQ_REDIS_KEY_PREFIX``."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_REDIS_", extra="ignore")

    url: str | None = Field(
        default=None, description="Unset: `bonmoniq serve` starts a local redis-server."
    )
    key_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.:{}-]*$",
        description="Put before every key name, so several platforms can share one Redis "
        "(store/keys.py). Letters, digits and _.:{}- only: no SCAN wildcard.",
    )
