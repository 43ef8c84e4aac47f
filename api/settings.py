"""Platform settings, read from ``BONMONIQ_*`` environment variables (documented in README)."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """Every knob of the platform; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Address carriers use to reach the platform (behind a reverse proxy: "
        "the proxy's https address). Webhook and WebSocket URLs are built from it and "
        "signatures are checked against it.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = Field(
        default=None, description="Unset: `bonmoniq serve` starts a local redis-server."
    )
    var_dir: Path = Path("var")
    profile: str = "cpu"
    llm_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (vLLM). Unset: embedded server."
    )
    llm_model: str = "smollm2-135m-instruct"
    llm_api_key: SecretStr | None = None
    llm_allowed_hosts: list[str] = Field(default_factory=list)
    llm_max_tokens: int = 60
    llm_temperature: float = 0.3
    cpu_threads: int = 2
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    log_level: str = "INFO"
    vad_stop_secs: float = 0.4
    turn_timeout_secs: float = 0.3
    call_max_seconds: int = 900

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "BONMONIQ_PUBLIC_URL must be an http(s) URL such as https://voice.example.com"
            )
        if parts.query or parts.fragment:
            raise ValueError("BONMONIQ_PUBLIC_URL must not carry a query or fragment")
        return value.rstrip("/")

    def public(self, path: str) -> str:
        """The public https URL of ``path``, as carriers see it."""
        return f"{self.public_url}{path}"

    def public_ws(self, path: str) -> str:
        """The public WebSocket URL of ``path`` (wss behind https, ws on plain http)."""
        parts = urlsplit(self.public_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}{path}"

    @property
    def models_cache(self) -> Path:
        """Where assembled model files live (the Whisper ``model.bin``)."""
        return self.var_dir / "models"


def twilio_credentials(settings: Settings) -> tuple[str, str]:
    """The Twilio account SID and auth token, or local development ones.

    With neither variable set, a random development pair is created once under
    ``var/secrets/`` so that ``bonmoniq serve`` and ``bonmoniq call`` on the same
    machine agree without configuration; a real account must set both.
    """
    if settings.twilio_account_sid and settings.twilio_auth_token:
        return settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()
    if settings.twilio_account_sid or settings.twilio_auth_token:
        raise ValueError(
            "set both BONMONIQ_TWILIO_ACCOUNT_SID and BONMONIQ_TWILIO_AUTH_TOKEN, or neither"
        )
    path = settings.var_dir / "secrets" / "twilio-dev.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pair = {"account_sid": "AC" + secrets.token_hex(16), "auth_token": secrets.token_hex(16)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(pair, f)
        log.warning(
            "no Twilio credentials configured: created a local development pair",
            extra={"path": str(path)},
        )
    pair = json.loads(path.read_text())
    return pair["account_sid"], pair["auth_token"]
