"""Settings of encrypted storage: the master key, the backend (local or S3), retention sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The region an S3-compatible endpoint gets unless one is set (empty included).
DEFAULT_REGION = "us-east-1"


class S3Settings(BaseSettings):
    """``BONMONIQ_S3_*``: an S3-compatible bucket."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_S3_", extra="ignore")

    endpoint: str | None = None
    bucket: str | None = None
    access_key: str | None = None
    secret_key: SecretStr | None = None
    region: str = DEFAULT_REGION

    @field_validator("region")
    @classmethod
    def _default_when_empty(cls, value: str) -> str:
        return value or DEFAULT_REGION


class StorageSettings(BaseSettings):
    """``BONMONIQ_STORAGE``, ``BONMONIQ_MASTER_KEY*``, ``BONMONIQ_OBJECTS_DIR``, the sweep."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    master_key: SecretStr | None = Field(
        default=None, description="Master key, base64 of 32 bytes (else BONMONIQ_MASTER_KEY_FILE)."
    )
    master_key_file: Path | None = Field(
        default=None, description="Master key file, mode 0600 (default var/secrets/master.key)."
    )
    storage: Literal["local", "s3"] = "local"
    objects_dir: Path | None = Field(default=None, description="Local storage (var/objects).")
    s3: S3Settings = Field(default_factory=S3Settings)
    retention_sweep_seconds: float = Field(
        default=3600.0, gt=0, description="How often `serve` deletes what is past retention."
    )
