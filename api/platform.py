"""What a running platform holds: settings, the state store, the shared models."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from redis.asyncio import Redis

from api.accounts import Accounts
from api.settings import Settings
from carriers.sinch.control import SinchControl
from carriers.telnyx.control import TelnyxControl
from carriers.twilio.control import TwilioControl
from routing.directory import Directory
from routing.policy import Carrier, Health, Policy
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
    accounts: Accounts

    def __post_init__(self) -> None:
        self.directory = Directory(self.redis)
        self.register = Register.load()
        self.policy = Policy.load(self.settings.routing_policy)
        a = self.accounts
        self.twilio = TwilioControl(a.twilio) if a.twilio else None
        self.telnyx = TelnyxControl(a.telnyx) if a.telnyx else None
        self.sinch = SinchControl(a.sinch) if a.sinch else None
        #: Carriers marked down until a time (a carrier API failing); see :meth:`health`.
        self.down_until: dict[Carrier, float] = {}
        self.calls = CallStore(self.redis)
        self.call_config = CallConfig(
            vad_stop_secs=self.settings.vad_stop_secs,
            turn_timeout_secs=self.settings.turn_timeout_secs,
            max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature,
            max_seconds=self.settings.call_max_seconds,
        )

    def health(self, now: float) -> Health:
        """Usable carriers at ``now``: configured, on the register in force, not marked down."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        configured = {
            Carrier(name)
            for name in ("twilio", "telnyx", "sinch")
            if getattr(self.accounts, name) is not None and self.register.allows(name, at)
        }
        return Health(frozenset(configured), dict(self.down_until))
