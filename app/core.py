"""The part of the platform every process builds, and the one factory of the platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, overload

from redis.asyncio import Redis

from app.errors import PlatformError
from app.settings import Settings
from calls.archive import CallArchive
from calls.store import CallStore
from carriers.base import Carrier, carrier_time_limit
from carriers.registry import Carriers, load_carriers
from integrations.egress import Egress
from integrations.endpoints import Endpoints
from integrations.outbox import Outbox
from integrations.sealed import Sealer
from integrations.secrets import ToolSecrets
from recordings.keyring import MasterKeyError
from recordings.lifecycle import Lifecycle
from recordings.objects import EncryptedObjects
from recordings.setup import StorageConfigError, encrypted_objects, make_storage
from recordings.subjects import subject_key
from routing.directory import Directory
from routing.policy import Health, Policy
from routing.subprocessors import Register
from store import keys
from store.redis import connect
from telephony.health import CarrierHealth
from telephony.service import Telephony
from telephony.sip import SipAccounts
from tenancy.audit import AuditLog
from tenancy.limits import Limits, OutboundLimiter
from tenancy.tenants import TenantStore

if TYPE_CHECKING:
    from app.platform import Platform
    from voice.engines import Engines


@dataclass(kw_only=True)
class Core:
    """What every process works with: stores, routing, carriers, limits and the audit log.

    ``serve`` builds the whole :class:`~app.platform.Platform` (the speech models on top); a
    command of the CLI builds this part only. Both come from :func:`build_platform`.
    """

    settings: Settings
    redis: Redis
    carriers: Carriers
    policy: Policy
    register: Register
    #: The encrypted store; ``None`` in a command run without the master key.
    objects: EncryptedObjects | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Build the collaborators that read only settings and Redis."""
        self.directory = Directory(self.redis)
        self.tenants = TenantStore(self.redis)
        self.calls = CallStore(self.redis, self.objects)
        #: Which configured carriers routing may use at a time (see :meth:`health`).
        self.carrier_health = CarrierHealth(self.carriers, self.register, self.redis)
        self.limiter = OutboundLimiter(
            self.redis,
            self.settings.limits.outbound_cents_per_minute,
            carrier_time_limit(self.settings.call.call_max_seconds),
        )
        #: Limits of a tenant that has none of its own (BONMONIQ_* defaults).
        self.default_limits = Limits(
            self.settings.limits.calls_per_minute,
            self.settings.limits.concurrent_calls,
            self.settings.limits.daily_spend_cents,
        )

    def sealed(self) -> EncryptedObjects:
        """The encrypted store; :class:`PlatformError` when this process has no master key."""
        if self.objects is None:
            raise PlatformError(
                "no master key: set BONMONIQ_MASTER_KEY or BONMONIQ_MASTER_KEY_FILE "
                "(`bonmoniq serve` creates the file on first start)"
            )
        return self.objects

    @cached_property
    def audit(self) -> AuditLog:
        """The tenants' audit logs (numbers digested under the master key)."""
        return AuditLog(self.redis, subject_key(self.sealed().keyring))

    @cached_property
    def sealer(self) -> Sealer:
        """Small values (secrets, URLs, webhook payloads) sealed under the tenants' keys."""
        return Sealer(self.sealed().keyring)

    @cached_property
    def egress(self) -> Egress:
        """Requests to customers' systems (tools, webhooks), guarded against SSRF."""
        s = self.settings.integrations
        return Egress(
            s.egress_allow,
            https_only=self.settings.cluster.mode != "development",
            ca_file=s.egress_ca_file,
        )

    @cached_property
    def webhook_endpoints(self) -> Endpoints:
        """The tenants' webhook endpoints."""
        return Endpoints(self.redis, self.sealer)

    @cached_property
    def outbox(self) -> Outbox:
        """The webhook deliveries: queued, listed, replayed."""
        hooks = self.settings.integrations
        return Outbox(
            self.redis,
            self.webhook_endpoints,
            self.sealer,
            delays={"call.ended": hooks.webhook_call_ended_delay_seconds},
            keep_s=hooks.webhook_keep_seconds,
            window_s=hooks.webhook_retry_window_seconds,
        )

    @cached_property
    def tool_secrets(self) -> ToolSecrets:
        """The tenants' secrets that sign HTTP tool requests."""
        return ToolSecrets(self.redis, self.sealer)

    @cached_property
    def sip_accounts(self) -> SipAccounts:
        """The tenants' SIP accounts (passwords sealed) and their registration states."""
        return SipAccounts(self.redis, self.sealer)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        """Retention, legal holds, data-subject requests and offboarding.

        Erasing a call erases its webhook deliveries; offboarding a tenant, its endpoints,
        deliveries, tools secret and SIP accounts.
        """
        return Lifecycle(
            self.redis,
            self.sealed(),
            CallArchive(self.redis),
            forget_call=[self.outbox.forget_call],
            forget_tenant=[
                self.outbox.forget_tenant,
                self.tool_secrets.forget,
                self.sip_accounts.forget_tenant,
            ],
        )

    def health(self, now: float) -> Health:
        """Usable carriers at ``now``: configured, on the register in force, not marked down."""
        return self.carrier_health.health(now)

    def mark_down(self, carrier: Carrier, until: float) -> None:
        """Leave ``carrier`` out of routing decisions until ``until`` (its API is failing)."""
        self.carrier_health.mark_down(carrier, until)

    def telephony(self) -> Telephony:
        """Numbers and outbound calls through this platform's carriers."""
        return Telephony(
            self.directory,
            self.calls,
            self.policy,
            self.carriers,
            self.health,
            self.settings,
            max_call_seconds=self.settings.call.call_max_seconds,
            mark_down=self.mark_down,
            down_seconds=self.settings.carriers.carrier_down_seconds,
            limiter=self.limiter,
        )


@overload
def build_platform(
    settings: Settings,
    redis: Redis,
    *,
    objects: EncryptedObjects | None = None,
    engines: None = None,
    carriers: Carriers | None = None,
    policy: Policy | None = None,
    register: Register | None = None,
) -> Core: ...


@overload
def build_platform(
    settings: Settings,
    redis: Redis,
    *,
    objects: EncryptedObjects,
    engines: Engines,
    carriers: Carriers | None = None,
    policy: Policy | None = None,
    register: Register | None = None,
) -> Platform: ...


def build_platform(
    settings: Settings,
    redis: Redis,
    *,
    objects: EncryptedObjects | None = None,
    engines: Engines | None = None,
    carriers: Carriers | None = None,
    policy: Policy | None = None,
    register: Register | None = None,
) -> Core:
    """Every collaborator of a process, built from ``settings``; a test may pass its own.

    With ``engines`` (``serve``): the whole :class:`~app.platform.Platform`; without: the
    :class:`Core` a command of the CLI needs (no speech models, no LLM).
    """
    keys.use_prefix(settings.store.key_prefix)
    if carriers is None:
        carriers = load_carriers(settings.carriers, settings.var_dir)
    policy = policy if policy is not None else Policy.load(settings.routing_policy)
    register = register if register is not None else Register.load()
    if engines is None:
        return Core(
            settings=settings,
            redis=redis,
            objects=objects,
            carriers=carriers,
            policy=policy,
            register=register,
        )
    if objects is None:
        raise PlatformError("serving calls needs the encrypted store (the master key)")
    # The speech stack (pipecat, the models' runtimes) is imported by serving processes only.
    from app.platform import Platform

    return Platform(
        settings=settings,
        redis=redis,
        objects=objects,
        engines=engines,
        carriers=carriers,
        policy=policy,
        register=register,
    )


def open_store(settings: Settings, url: str | None) -> Redis:
    """A client of the state store, every key name under the settings' prefix.

    The master the sentinels name when ``BONMONIQ_REDIS_SENTINELS`` is set (``url`` unused),
    otherwise Redis at ``url``. The prefix is set before the client exists, so nothing of the
    process reads or writes a key outside it (the start-up migration included).
    """
    keys.use_prefix(settings.store.key_prefix)
    if settings.store.sentinels or url is None:
        return connect(settings.store)
    return connect(url)


def open_objects(
    settings: Settings, client: Redis, create_master: bool = False
) -> EncryptedObjects:
    """The encrypted store of ``settings`` (``serve`` creates the master key on first start).

    Raises:
        PlatformError: no master key, or incomplete storage settings.
    """
    stored = settings.recordings
    master = stored.master_key.get_secret_value() if stored.master_key else None
    try:
        storage = make_storage(stored.storage, settings.objects_path, stored.s3)
        return encrypted_objects(
            client, master, settings.master_key_path, storage, create_master=create_master
        )
    except (MasterKeyError, StorageConfigError) as e:
        raise PlatformError(str(e)) from e


def readable_objects(settings: Settings, client: Redis) -> EncryptedObjects | None:
    """The encrypted store when this process has the master key; ``None`` otherwise."""
    try:
        return open_objects(settings, client)
    except PlatformError:
        return None
