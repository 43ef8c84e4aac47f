"""Settings of the carrier accounts (``BONMONIQ_TWILIO_*``, ``_TELNYX_*``, ``_SINCH_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carriers.sinch.control import NUMBERS_BASE, VOICE_BASE
from carriers.telnyx.control import API_BASE as TELNYX_API_BASE
from carriers.twilio.control import API_BASE as TWILIO_API_BASE


def secret(value: SecretStr | None) -> str | None:
    """The secret's value, ``None`` when unset."""
    return value.get_secret_value() if value is not None else None


def complete(name: str, fields: dict[str, str | None]) -> bool:
    """Whether a carrier's credentials are all set (``fields`` by setting name, lower case).

    None set: ``False``; some but not all: ``ValueError`` naming the missing variables.
    """
    given = [k for k, v in fields.items() if v]
    if given and len(given) != len(fields):
        missing = [f"BONMONIQ_{k.upper()}" for k, v in fields.items() if not v]
        raise ValueError(f"{name} is partly configured: also set {', '.join(missing)}")
    return bool(given)


#: How long a carrier whose API failed is left out of routing, unless set.
CARRIER_DOWN_SECONDS = 60.0


class TwilioSettings(BaseSettings):
    """``BONMONIQ_TWILIO_*``: one Twilio account."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_TWILIO_", extra="ignore")

    account_sid: str | None = None
    auth_token: SecretStr | None = None
    api_base: str = TWILIO_API_BASE


class TelnyxSettings(BaseSettings):
    """``BONMONIQ_TELNYX_*``: one Telnyx account and its Call Control application."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_TELNYX_", extra="ignore")

    api_key: SecretStr | None = None
    public_key: str | None = None
    connection_id: str | None = None
    api_base: str = TELNYX_API_BASE


class SinchSettings(BaseSettings):
    """``BONMONIQ_SINCH_*``: one Sinch voice application and its project."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_SINCH_", extra="ignore")

    app_key: str | None = None
    app_secret: SecretStr | None = None
    project_id: str | None = None
    key_id: str | None = None
    key_secret: SecretStr | None = None
    voice_base: str = VOICE_BASE
    numbers_base: str = NUMBERS_BASE


class CarrierSettings(BaseSettings):
    """Every carrier's account, and how long a failing carrier is left out of routing."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    telnyx: TelnyxSettings = Field(default_factory=TelnyxSettings)
    sinch: SinchSettings = Field(default_factory=SinchSettings)
    carrier_down_seconds: float = Field(
        default=CARRIER_DOWN_SECONDS,
        gt=0,
        description="How long a carrier whose API failed is left out of routing.",
    )
