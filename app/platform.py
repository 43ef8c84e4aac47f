"""What a running platform holds: settings, the state store, the shared models."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis

from app.settings import Settings
from calls.store import CallRecord, CallStore, carrier_time_limit
from carriers.errors import CarrierUnavailable
from carriers.sinch.control import SinchControl
from carriers.telnyx.control import TelnyxControl
from carriers.twilio.control import TwilioControl
from recordings.lifecycle import Lifecycle
from recordings.objects import EncryptedObjects
from recordings.subjects import subject_key
from routing.directory import DEFAULT_TENANT, Agent, Directory
from routing.policy import Carrier, Health, Policy
from routing.subprocessors import Register
from store import keys
from telephony.accounts import Accounts, controls_for, health_at, verifiers_for
from telephony.admission import Admission
from telephony.inbound import Inbound
from telephony.outbound import Telephony
from tenancy.audit import AuditLog
from tenancy.limits import Limits, OutboundLimiter
from tenancy.tenants import TenantStore
from voice.engines import PHONE_RATE, Engines
from voice.session import CallConfig, fixed_phrases, prepare_phrases
from voice.transport import StreamDeps

C = TypeVar("C", TwilioControl, TelnyxControl, SinchControl)


@dataclass
class Platform:
    """Everything the HTTP and WebSocket handlers need, built once at start-up."""

    settings: Settings
    redis: Redis
    engines: Engines
    accounts: Accounts
    objects: EncryptedObjects = field(repr=False, kw_only=True)

    def __post_init__(self) -> None:
        self.directory = Directory(self.redis)
        self.tenants = TenantStore(self.redis)
        self.audit = AuditLog(self.redis, subject_key(self.objects.keyring))
        token = self.settings.operator_token
        self.operator_token = token.get_secret_value() if token else None
        self.register = Register.load()
        self.policy = Policy.load(self.settings.routing_policy)
        self.controls = controls_for(self.accounts)
        self.verifiers = verifiers_for(self.accounts)
        #: Carriers marked down until a time (a carrier API failing); see :meth:`health`.
        self.down_until: dict[Carrier, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.calls = CallStore(self.redis, self.objects)
        #: Caps on calls in progress, per process and per tenant (inbound beyond: busy).
        inbound_max_s = (
            self.settings.call.inbound_call_max_seconds or self.settings.call.call_max_seconds
        )
        self.admission = Admission(
            self.redis,
            self.settings.limits.max_calls,
            self.settings.limits.inbound_concurrent_calls,
            carrier_time_limit(inbound_max_s),
        )
        self.lifecycle = Lifecycle(self.redis, self.objects)
        self.limiter = OutboundLimiter(
            self.redis,
            self.settings.limits.outbound_cents_per_minute,
            self.settings.call.call_max_seconds,
        )
        #: Limits of a tenant that has none of its own (BONMONIQ_* defaults).
        self.default_limits = Limits(
            self.settings.limits.calls_per_minute,
            self.settings.limits.concurrent_calls,
            self.settings.limits.daily_spend_cents,
        )
        self.inbound = Inbound(
            self.directory, self.policy, self.health, self.admission, self.calls, self.prepare
        )
        self.call_config = CallConfig(
            vad_start_secs=self.settings.call.vad_start_secs,
            vad_stop_secs=self.settings.call.vad_stop_secs,
            vad_min_volume=self.settings.call.vad_min_volume,
            turn_timeout_secs=self.settings.call.turn_timeout_secs,
            early_stt=self.settings.call.early_stt,
            speculate=self.settings.call.speculate,
            max_tokens=self.settings.llm.max_tokens,
            max_sentences=self.settings.llm.max_sentences,
            temperature=self.settings.llm.temperature,
            max_seconds=self.settings.call.call_max_seconds,
            inbound_max_seconds=self.settings.call.inbound_call_max_seconds,
        )

    @property
    def stream_deps(self) -> StreamDeps:
        """What a carrier's media stream needs (voice/transport.py)."""
        return StreamDeps(
            self.calls, self.directory, self.engines, self.call_config, self.admission,
            self.prepare, self.objects, self._objected,
        )  # fmt: skip

    async def _objected(self, record: CallRecord, how: str) -> None:
        await self.audit.append(
            record.tenant, at=time.time(), key_id="caller", action="recording.objected",
            target=record.call_id, address="", request_id="", detail={"how": how},
        )  # fmt: skip

    def control(self, carrier: Carrier, kind: type[C]) -> C:
        """The REST client of ``carrier``; :class:`CarrierUnavailable` if it is not configured."""
        control = self.controls.get(carrier)
        if not isinstance(control, kind):
            raise CarrierUnavailable(
                f"{carrier} is not configured: set its BONMONIQ_{str(carrier).upper()}_* "
                "settings (README, Settings)"
            )
        return control

    def health(self, now: float) -> Health:
        """Usable carriers at ``now``: configured, on the register in force, not marked down."""
        return health_at(self.accounts, self.register, now, self.down_until)

    def telephony(self) -> Telephony:
        """Numbers and outbound calls through this platform's carriers."""
        return Telephony(
            self.settings, self.directory, self.calls, self.policy, self.health, self.controls,
            self.mark_down, self.limiter,
        )  # fmt: skip

    def prepare(self, agent: Agent) -> None:
        """Synthesize ``agent``'s fixed phrases in the background (before its first call)."""
        if all(self.engines.cached(t, PHONE_RATE) is not None for t in fixed_phrases(agent)):
            return  # the usual case: prepared at start or when the agent was saved
        task = asyncio.get_running_loop().create_task(prepare_phrases(self.engines, agent))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def prepare_all(self) -> int:
        """Synthesize the fixed phrases of every agent of every tenant; how many agents."""
        tenants = {DEFAULT_TENANT, *map(str, await self.redis.smembers(keys.TENANTS))}
        count = 0
        for tenant in sorted(tenants):
            for agent in await self.directory.list_agents(tenant):
                await prepare_phrases(self.engines, agent)
                count += 1
        return count

    def mark_down(self, carrier: Carrier, until: float) -> None:
        """Leave ``carrier`` out of routing decisions until ``until`` (its API is failing)."""
        self.down_until[carrier] = until
