"""What a running platform holds: settings, the state store, the shared models."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from api.settings import Settings
from routing.directory import Directory
from routing.subprocessors import Register
from voice.calls import CallStore
from voice.engines import Engines
from voice.session import CallConfig


@dataclass
class Platform:
    """Everything the HTTP and WebSocket handlers need, built once at start-up."""

    settings: Settings
    redis: Redis
    engines: Engines
    twilio_account_sid: str
    twilio_auth_token: str

    def __post_init__(self) -> None:
        self.directory = Directory(self.redis)
        self.register = Register.load()
        self.calls = CallStore(self.redis)
        self.call_config = CallConfig(
            vad_stop_secs=self.settings.vad_stop_secs,
            turn_timeout_secs=self.settings.turn_timeout_secs,
            max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature,
            max_seconds=self.settings.call_max_seconds,
        )
