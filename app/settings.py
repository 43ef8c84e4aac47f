"""Platform settings, read from ``BONMONIQ_*`` environment variables (documented in README)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carriers.settings import CarrierSettings
from cluster.settings import ClusterSettings
from integrations.settings import IntegrationSettings
from llm.settings import LLMSettings
from recordings.settings import StorageSettings
from store.settings import StoreSettings
from tenancy.settings import LimitSettings
from voice.settings import CallSettings


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


def trusted_peers(spec: str) -> list[str]:
    """Comma-separated IP addresses and CIDRs as normalized networks (host bits are refused).

    Raises:
        ValueError: an entry is neither an IP address nor a CIDR.
    """
    out = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        try:
            out.append(str(ipaddress.ip_network(entry)))
        except ValueError:
            raise ValueError(
                f"BONMONIQ_SIP_TRUSTED must list IP addresses or CIDRs such as 203.0.113.0/28, "
                f"not {entry!r}"
            ) from None
    return out


class Settings(BaseSettings):
    """Every knob of the platform, each section from the package it configures; one per process."""

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
    var_dir: Path = Path("var")
    profile: str = "cpu"
    cpu_threads: int = 2
    routing_policy: str | None = Field(
        default=None, description="Routing policy: a JSON file path or JSON text (README)."
    )
    operator_token: SecretStr | None = Field(
        default=None, description="Bearer token of the operator endpoints (/v1/operator/...)."
    )
    log_level: str = "INFO"
    pipecat_log_level: str = "WARNING"
    call: CallSettings = Field(default_factory=CallSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    carriers: CarrierSettings = Field(default_factory=CarrierSettings)
    recordings: StorageSettings = Field(default_factory=StorageSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    integrations: IntegrationSettings = Field(default_factory=IntegrationSettings)
    sip_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - carriers and PBXs reach it from outside
        description="Address the SIP stack (UDP and TCP) is bound to.",
    )
    sip_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the SIP stack (5060 is the usual one). Unset: no SIP stack, "
        "SIP accounts are kept but not registered.",
    )
    sip_public_host: str | None = Field(
        default=None,
        description="Address put in SIP Contact headers and SDP (behind NAT: the public one); "
        "unset: BONMONIQ_SIP_HOST (127.0.0.1 when that is 0.0.0.0).",
    )
    sip_rtp_ports: str = Field(
        default="40000-40999", description="UDP port range of SIP calls' RTP (first-last)."
    )
    sip_trusted: str = Field(
        default="",
        description="IP addresses and CIDRs (comma-separated) of PBXs and SIP trunks whose "
        "INVITEs any SIP account accepts without having registered there (they call from "
        "another address than the registrar). Empty: only each account's registrar.",
    )
    sip_registrar_allow: list[str] = Field(
        default_factory=list,
        description="CIDRs and host names a SIP account's registrar may be although they are "
        "not public (JSON list), besides BONMONIQ_EGRESS_ALLOW. Empty: public addresses only.",
    )

    @classmethod
    def env_name(cls, model: str, loc: tuple[int | str, ...]) -> str:
        """The environment variable of field ``loc`` of the settings class named ``model``."""
        prefixes: dict[str, str] = {}
        pending: list[type[BaseSettings]] = [cls]
        while pending:
            section = pending.pop()
            prefixes[section.__name__] = str(section.model_config.get("env_prefix", ""))
            for f in section.model_fields.values():
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseSettings):
                    pending.append(f.annotation)
        return prefixes.get(model, "BONMONIQ_") + "_".join(str(p) for p in loc).upper()

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

    @field_validator("sip_trusted")
    @classmethod
    def _sip_trusted_are_networks(cls, value: str) -> str:
        return ",".join(trusted_peers(value))

    @property
    def sip_trusted_peers(self) -> list[str]:
        """The trusted SIP peers as normalized networks (``10.0.0.0/8``, ``192.0.2.7/32``)."""
        return self.sip_trusted.split(",") if self.sip_trusted else []

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
        return self.recordings.master_key_file or self.var_dir / "secrets" / "master.key"

    @property
    def objects_path(self) -> Path:
        """Where the local storage backend keeps encrypted objects."""
        return self.recordings.objects_dir or self.var_dir / "objects"

    @property
    def models_cache(self) -> Path:
        """Where assembled model files live (the Whisper ``model.bin``)."""
        return self.var_dir / "models"
