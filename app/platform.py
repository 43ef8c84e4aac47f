"""A serving platform: the core every process builds, plus the speech models and call needs."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from api.webhooks import websocket_transport
from app.core import Core
from app.sip_media import sip_calls
from app.webrtc_media import webrtc_calls
from calls.records import CallRecord
from carriers.base import Carrier, carrier_time_limit
from carriers.sip.stack import SipStack
from cluster.commands import CommandBus
from cluster.lease import Lease
from cluster.live import LiveCalls
from cluster.node import Node
from cluster.reaper import Reaper
from integrations.delivery import DeliveryWorker, RetryPolicy
from integrations.egress import AllowList
from integrations.payload import Payloads
from integrations.summary import Summarizer
from integrations.tools import ToolRunner
from recordings.objects import EncryptedObjects
from routing.directory import DEFAULT_TENANT, Agent
from store import keys
from telephony.admission import Admission
from telephony.inbound import Inbound
from telephony.sip import SipRegistrations
from telephony.sip_calls import CARRIER as CARRIER_SIP
from telephony.transfer import Transfers
from telephony.webrtc import WebRtcTokens
from voice.engines import PHONE_RATE, Engines
from voice.prompt import fixed_phrases, prepare_phrases, voice_of
from voice.session import SessionDeps
from voice.transport import StreamDeps

#: A SIP account's lease (one process registers it), renewed every poll.
SIP_LEASE_S = 30.0
SIP_POLL_S = 5.0


@dataclass(kw_only=True)
class Platform(Core):
    """Everything the HTTP and WebSocket handlers need, built once at start-up."""

    engines: Engines
    objects: EncryptedObjects = field(repr=False)

    def __post_init__(self) -> None:
        """Build the core, then what serving calls needs on top of it."""
        super().__post_init__()
        token = self.settings.operator_token
        self.operator_token = token.get_secret_value() if token else None
        self._background: set[asyncio.Task[None]] = set()
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
        self.inbound = Inbound(
            self.directory, self.policy, self.health, self.admission, self.calls, self.prepare
        )
        cluster = self.settings.cluster
        #: This process's lease and the calls it carries; the lost processes' calls ended.
        self.node = Node(
            self.redis,
            cluster.node_id,
            cluster.node_heartbeat_seconds,
            cluster.node_lease_seconds,
            self.calls,
        )
        self.live = LiveCalls(self.node)
        #: Transfers of live calls to a person: routing, limits, then the call's carrier.
        self.transfers = Transfers(
            calls=self.calls,
            tenants=self.tenants,
            policy=self.policy,
            carriers=self.carriers,
            health=self.health,
            limiter=self.limiter,
            default_limits=self.default_limits,
            keyring=self.objects.keyring,
            urls=self.settings,
        )
        self.commands = CommandBus(
            self.redis, cluster.node_id, self.live, self.calls, cluster.command_timeout_seconds
        )
        hooks = self.settings.integrations
        #: The agents' HTTP tools, signed with the tenant's tool secret.
        self.tools = ToolRunner(
            self.egress, self.tool_secrets, max_bytes=hooks.tool_response_max_bytes
        )
        #: Sends the queued webhook deliveries (every process runs one).
        self.deliveries = DeliveryWorker(
            self.redis,
            self.webhook_endpoints,
            self.sealer,
            self.egress,
            Payloads(self.calls, self.directory, Summarizer(self.engines.llm, timeout_s=15)),
            RetryPolicy(
                hooks.webhook_retry_base_seconds,
                hooks.webhook_retry_cap_seconds,
                hooks.webhook_retry_window_seconds,
            ),
            timeout_s=hooks.webhook_timeout_seconds,
            lease_s=hooks.webhook_lease_seconds,
            poll_s=hooks.webhook_poll_seconds,
            max_bytes=hooks.webhook_response_max_bytes,
            on_disabled=self._endpoint_disabled,
            keep_s=hooks.webhook_keep_seconds,
        )
        #: The SIP stack and its registrations while :meth:`sip_running` (SIP on).
        self.sip_stack: SipStack | None = None
        self.sip_registrations: SipRegistrations | None = None
        #: Browser calls: their single-use tokens, and the calls this process answers.
        self.webrtc_tokens = WebRtcTokens(self.redis)
        self.webrtc = webrtc_calls(self)
        self.calls.on_final = self._call_ended
        self.reaper = Reaper(
            self.redis,
            cluster.node_id,
            self.calls,
            self.objects,
            cluster.node_lease_seconds,
            self._carrier_hang_up,
        )

    @contextlib.asynccontextmanager
    async def cluster_running(self) -> AsyncIterator[None]:
        """This process in the cluster while inside: heartbeat, command listener, reaper.

        Wrap the whole serving time, the drain after SIGTERM included: the lease stays alive
        while calls finish; on exit the tasks stop and the lease is deleted.
        """
        heartbeat_s = self.settings.cluster.node_heartbeat_seconds
        await self.node.beat(time.time())  # registered before the first call can arrive
        tasks = [
            asyncio.create_task(self.node.run()),
            asyncio.create_task(self.commands.listen()),
            asyncio.create_task(self.reaper.run(heartbeat_s)),
            asyncio.create_task(self.deliveries.run_forever()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.node.stop(time.time())

    @contextlib.asynccontextmanager
    async def sip_running(self) -> AsyncIterator[SipStack | None]:
        """The SIP stack and the registrations of the SIP accounts, while inside.

        Only when ``BONMONIQ_SIP_PORT`` is set (else ``None``): the stack listens on
        ``BONMONIQ_SIP_HOST:BONMONIQ_SIP_PORT`` (UDP and TCP) and this process registers the
        accounts whose lease it takes; when the drain starts or on exit it unregisters them and
        gives the leases back.
        """
        settings = self.settings
        if settings.sip_port is None:
            yield None
            return
        allow = AllowList.parse(
            [*settings.integrations.egress_allow, *settings.sip_registrar_allow]
        )
        stack = SipStack(
            settings.sip_host,
            settings.sip_port,
            public_host=settings.sip_public_host,
            permit=lambda host, ip: allow.permits(host, ipaddress.ip_address(ip)),
            trusted=settings.sip_trusted_peers,
        )
        await stack.start()
        answering = sip_calls(self, stack, self.sip_accounts.route_of)
        self.transfers.channels[CARRIER_SIP] = answering  # transfers by REFER
        node = settings.cluster.node_id
        self.sip_stack = stack
        self.sip_registrations = SipRegistrations(
            self.sip_accounts,
            stack,
            lambda name: Lease(self.redis, name, SIP_LEASE_S, node),
            poll_s=SIP_POLL_S,
        )
        task = asyncio.create_task(self.sip_registrations.run())
        drain = self.sip_registrations.drain  # a draining process lets others register
        self.admission.drain_listeners.append(drain)
        if self.admission.draining:
            drain()
        try:
            yield stack
        finally:
            self.admission.drain_listeners.remove(drain)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.transfers.channels.pop(CARRIER_SIP, None)
            await answering.stop()  # BYE to the calls still running here
            await stack.stop()
            self.sip_stack = None
            self.sip_registrations = None

    @contextlib.asynccontextmanager
    async def webrtc_running(self) -> AsyncIterator[None]:
        """Browser calls are answered while inside; on exit those still running here end."""
        try:
            yield
        finally:
            await self.webrtc.stop()

    def sip_changed(self) -> None:
        """A SIP account was created, changed or deleted here: register accordingly now."""
        if self.sip_registrations is not None:
            self.sip_registrations.poke()

    @property
    def stream_deps(self) -> StreamDeps:
        """What a carrier's media stream needs (voice/transport.py)."""
        session = SessionDeps(
            self.calls,
            self.engines,
            self.settings.call,
            self.settings.llm,
            self.objects,
            transfers=self.transfers,
            outbox=self.outbox,
            tools=self.tools,
        )
        return StreamDeps(
            session,
            self.directory,
            self.admission,
            self.prepare,
            websocket_transport,
            self._objected,
            self.live,
        )

    async def _objected(self, record: CallRecord, how: str) -> None:
        await self.audit.append(
            record.tenant,
            at=time.time(),
            key_id="caller",
            action="recording.objected",
            target=record.call_id,
            address="",
            request_id="",
            detail={"how": how},
        )

    async def _call_ended(self, call_id: str, now: float, status: str) -> None:
        """Queue the tenant's ``call.ended`` (its body is built at the first attempt)."""
        try:
            tenant = await self.redis.hget(keys.call(call_id), "tenant")
        except Exception:  # the status callback is applied all the same
            logging.getLogger(__name__).exception("call.ended not queued")
            return
        if tenant:  # a call refused before any agent answered has no tenant
            data = {"ended_at": now, "status": status}
            await self.outbox.emit(str(tenant), "call.ended", call_id, data)

    async def _endpoint_disabled(
        self, tenant: str, endpoint_id: str, reason: str, now: float
    ) -> None:
        await self.audit.append(
            tenant,
            at=now,
            key_id="platform",
            action="webhook_endpoint.disabled",
            target=endpoint_id,
            address="",
            request_id="",
            detail={"reason": reason},
        )

    async def _carrier_hang_up(self, carrier: str, carrier_call_id: str) -> None:
        """End a call at its carrier through the carrier's REST API (SIP calls have none)."""
        if carrier not in {c.value for c in Carrier}:  # SIP: its dialog died with its process
            logging.getLogger(__name__).debug(
                "lost call's carrier has no API to hang up", extra={"carrier": carrier}
            )
            return
        await self.carriers.kit(Carrier(carrier)).control.hang_up(carrier_call_id)

    def prepare(self, agent: Agent, rate: int = PHONE_RATE) -> None:
        """Synthesize ``agent``'s fixed phrases at ``rate`` in the background (before a call)."""
        voice = voice_of(self.engines, agent)
        if all(self.engines.cached(t, rate, voice) is not None for t in fixed_phrases(agent)):
            return  # the usual case: prepared at start or when the agent was saved
        task = asyncio.get_running_loop().create_task(prepare_phrases(self.engines, agent, rate))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def prepare_all(self) -> int:
        """Synthesize the fixed phrases of every agent of every tenant; how many agents."""
        tenants = {DEFAULT_TENANT, *map(str, await self.redis.smembers(keys.tenants()))}
        count = 0
        for tenant in sorted(tenants):
            for agent in await self.directory.list_agents(tenant):
                await prepare_phrases(self.engines, agent)
                count += 1
        return count
