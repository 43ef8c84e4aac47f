"""Settings of the state store: where Redis is, and the prefix of every key."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port,...`` as ``(host, port)`` pairs (an IPv6 host in brackets).

    Raises:
        ValueError: an entry without a host or a port in 1-65535.
    """
    out: list[tuple[str, int]] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not host:port")
        out.append((host, int(port)))
    return out


class StoreSettings(BaseSettings):
    """``BONMONIQ_REDIS_URL`` or ``BONMONIQ_REDIS_SENTINELS``, ``BONMONIQ_REDIS_KEY_PREFIX``."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_REDIS_", extra="ignore")

    url: str | None = Field(
        default=None,
        description="Unset (and no sentinels): `bonmoniq serve` starts a local redis-server.",
    )
    sentinels: str | None = Field(
        default=None,
        description="Redis Sentinel: host:port,host:port,... The master is found through them "
        "(and again after a failover); BONMONIQ_REDIS_URL is then unused.",
    )
    master_name: str = Field(
        default="bonmoniq",
        min_length=1,
        description="The name the sentinels monitor the master under.",
    )
    password: SecretStr | None = Field(
        default=None, description="The master's and replicas' password (with sentinels)."
    )
    sentinel_password: SecretStr | None = Field(
        default=None, description="The sentinels' own password, if they require one."
    )
    retry_seconds: float = Field(
        default=15.0,
        gt=0,
        description="With sentinels: how long a command keeps retrying while the master does "
        "not answer (a failover) before it fails.",
    )
    key_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.:{}-]*$",
        description="Put before every key name, so several platforms can share one Redis "
        "(store/keys.py). Letters, digits and _.:{}- only: no SCAN wildcard.",
    )

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not parse_sentinels(value):
            raise ValueError("no sentinel given")
        return value

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        """The sentinels as ``(host, port)`` pairs; empty without ``BONMONIQ_REDIS_SENTINELS``."""
        return parse_sentinels(self.sentinels) if self.sentinels else []

    @property
    def shared(self) -> bool:
        """Whether Redis is given (a URL or sentinels): no local redis-server is started."""
        return bool(self.url or self.sentinels)
