"""Platform settings, read from ``BONMONIQ_*`` environment variables (documented in README)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def split_addr(addr: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) as a pair; ``None`` for ``off``.

    Raises:
        ValueError: ``addr`` is neither ``off`` nor ``host:port`` with a port up to 65535.
    """
    if addr.strip().lower() == "off":
        return None
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"BONMONIQ_METRICS_ADDR must be host:port or off, not {addr!r}")
    return host.strip("[]"), int(port)


#: The longest call the platform may allow: the carriers' own maximum (4 hours) less the grace
#: they are given after the platform's closing phrase.
CALL_MAX_LIMIT_S = 14400 - 30


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
    metrics_addr: str = Field(
        default="127.0.0.1:9464",
        description="Where `serve` answers `GET /metrics` (host:port), a listener of its own; "
        "`off`: nowhere. The public listener never serves it.",
    )
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
    # An answer is cut after this many sentences (0: never); see llm/client.py.
    llm_max_sentences: int = 2
    llm_temperature: float = 0.3
    cpu_threads: int = 2
    llm_generation_threads: int | None = Field(
        default=None,
        description="Threads of the embedded LLM while it writes an answer (it reads the prompt "
        "with cpu_threads). Unset: half of cpu_threads, so that Piper speaking the first "
        "sentence and the LLM writing the next one each have a core.",
    )
    llm_prompt_states_mb: int = Field(
        default=256,
        ge=0,
        description="MB of recent prompt states the embedded LLM server keeps (0: none), so a "
        "call's turn reads only what is new since its last turn (llm/llama_server.py).",
    )
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_base: str = "https://api.twilio.com"
    telnyx_api_key: SecretStr | None = None
    telnyx_public_key: str | None = None
    telnyx_connection_id: str | None = None
    telnyx_api_base: str = "https://api.telnyx.com/v2"
    sinch_app_key: str | None = None
    sinch_app_secret: SecretStr | None = None
    sinch_project_id: str | None = None
    sinch_key_id: str | None = None
    sinch_key_secret: SecretStr | None = None
    sinch_voice_base: str = "https://calling-euc1.api.sinch.com"
    sinch_numbers_base: str = "https://numbers.api.sinch.com"
    routing_policy: str | None = Field(
        default=None, description="Routing policy: a JSON file path or JSON text (README)."
    )
    operator_token: SecretStr | None = Field(
        default=None, description="Bearer token of the operator endpoints (/v1/operator/...)."
    )
    log_level: str = "INFO"
    pipecat_log_level: str = "WARNING"
    # End of turn (BENCHMARKS.md): the VAD declares silence after vad_stop_secs; the
    # turn ends turn_timeout_secs later, a wait that runs while Whisper transcribes (~0.4 s on
    # 2 cores), so a caller may pause 0.6 s mid-sentence without being answered.
    vad_stop_secs: float = 0.25
    turn_timeout_secs: float = 0.35
    # Start of speech: 0.1 s at volume 0.5, so one-word answers ("Yes.", "Bye.") are heard
    # (pipecat's 0.2 s at 0.6 missed most of them; BENCHMARKS.md).
    vad_start_secs: float = 0.1
    vad_min_volume: float = 0.5
    # Whisper starts when the caller pauses, and the answer inside the pause window, held
    # until it closes (README; BENCHMARKS.md measures each).
    early_stt: bool = True
    speculate: bool = True
    call_max_seconds: int = Field(
        default=900,
        ge=1,
        le=CALL_MAX_LIMIT_S,
        description="The platform ends a call (closing phrase, then hang-up at the carrier) "
        "after this long; carriers that take a limit get it plus 30 s as their own (the "
        "carriers' maximum is 4 hours, so at most 14370).",
    )
    inbound_call_max_seconds: int | None = Field(
        default=None,
        ge=1,
        le=CALL_MAX_LIMIT_S,
        description="The same for inbound calls. Unset: BONMONIQ_CALL_MAX_SECONDS.",
    )
    master_key: SecretStr | None = Field(
        default=None, description="Master key, base64 of 32 bytes (else BONMONIQ_MASTER_KEY_FILE)."
    )
    master_key_file: Path | None = Field(
        default=None, description="Master key file, mode 0600 (default var/secrets/master.key)."
    )
    storage: Literal["local", "s3"] = "local"
    objects_dir: Path | None = Field(default=None, description="Local storage (var/objects).")
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    retention_sweep_seconds: float = Field(
        default=3600.0, gt=0, description="How often `serve` deletes what is past retention."
    )
    carrier_down_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a carrier whose API failed is left out of routing.",
    )
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
    phrase_cache_mb: int = Field(
        default=64,
        ge=0,
        description="MB of synthesized fixed phrases (announcements, greetings) kept per "
        "process, the least recently used dropped first; a dropped phrase is synthesized again "
        "when next needed (0: none kept, each call synthesizes its phrases).",
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

    @field_validator("metrics_addr")
    @classmethod
    def _metrics_addr_is_host_port(cls, value: str) -> str:
        split_addr(value)
        return value.strip()

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """Host and port of the metrics listener; ``None`` when it is off."""
        return split_addr(self.metrics_addr)

    def public(self, path: str) -> str:
        """The public https URL of ``path``, as carriers see it."""
        return f"{self.public_url}{path}"

    def public_ws(self, path: str) -> str:
        """The public WebSocket URL of ``path`` (wss behind https, ws on plain http)."""
        parts = urlsplit(self.public_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}{path}"

    @property
    def master_key_path(self) -> Path:
        """Where the master key file is (created there on first ``serve`` if no key is set)."""
        return self.master_key_file or self.var_dir / "secrets" / "master.key"

    @property
    def objects_path(self) -> Path:
        """Where the local storage backend keeps encrypted objects."""
        return self.objects_dir or self.var_dir / "objects"

    @property
    def models_cache(self) -> Path:
        """Where assembled model files live (the Whisper ``model.bin``)."""
        return self.var_dir / "models"
