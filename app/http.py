"""The HTTP edge of a platform: each router of ``api/`` handed the collaborators it uses."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI

from api import (
    public,
    routes_agents,
    routes_calls,
    routes_data,
    routes_keys,
    routes_numbers,
    routes_operator,
    routes_sinch,
    routes_sip,
    routes_telnyx,
    routes_transfer,
    routes_twilio,
    routes_webhooks,
    routes_webrtc,
)
from api.app import NotReady, create_app
from api.webhooks import CarrierDeps
from app.platform import Platform
from carriers.base import Carrier
from carriers.sinch.kit import SinchKit
from carriers.telnyx.kit import TelnyxKit
from carriers.twilio.kit import TwilioKit
from integrations.egress import AllowList
from llm.client import probe
from llm.errors import LLMUnavailable
from tenancy.write_limits import WriteLimiter


def http_app(platform: Platform) -> FastAPI:
    """The ASGI app serving ``platform``."""

    async def readiness() -> dict[str, Any]:
        return await ready(platform)

    return create_app(routers(platform), platform.redis, readiness)


def routers(platform: Platform) -> list[APIRouter]:
    """Every router of the app, in the order they are matched."""
    # One bucket per tenant for every configuration write (agents, numbers, keys).
    writes = WriteLimiter(platform.redis, platform.settings.limits.config_writes_per_minute)
    telephony = platform.telephony()
    carrier_deps = CarrierDeps(
        platform.settings,
        platform.inbound,
        platform.calls,
        platform.stream_deps,
        commands=platform.commands,
    )
    return [
        routes_twilio.router(platform.carriers.find(Carrier.TWILIO, TwilioKit), carrier_deps),
        routes_telnyx.router(platform.carriers.find(Carrier.TELNYX, TelnyxKit), carrier_deps),
        routes_sinch.router(
            platform.carriers.find(Carrier.SINCH, SinchKit),
            carrier_deps,
            platform.settings.call.max_seconds_of("inbound"),
        ),
        routes_transfer.router(platform.transfers, platform.settings),
        public.router(platform.register),
        routes_keys.router(
            tenants=platform.tenants,
            audit=platform.audit,
            writes=writes,
            limiter=platform.limiter,
            destinations=platform.policy.destinations,
            default_limits=platform.default_limits,
        ),
        routes_operator.router(
            tenants=platform.tenants,
            audit=platform.audit,
            default_limits=platform.default_limits,
            operator_token=platform.operator_token,
        ),
        routes_agents.router(
            tenants=platform.tenants,
            directory=platform.directory,
            audit=platform.audit,
            writes=writes,
            prepare=platform.prepare,
            voices=platform.engines.voices,
            egress=platform.egress,
            tool_secrets=platform.tool_secrets,
        ),
        routes_numbers.router(
            tenants=platform.tenants,
            directory=platform.directory,
            audit=platform.audit,
            writes=writes,
            telephony=telephony,
        ),
        routes_sip.router(
            tenants=platform.tenants,
            directory=platform.directory,
            audit=platform.audit,
            writes=writes,
            accounts=platform.sip_accounts,
            register=platform.register,
            allow=AllowList.parse(
                [
                    *platform.settings.integrations.egress_allow,
                    *platform.settings.sip_registrar_allow,
                ]
            ),
            changed=platform.sip_changed,
        ),
        routes_webrtc.router(
            tenants=platform.tenants,
            audit=platform.audit,
            writes=writes,
            tokens=platform.webrtc_tokens,
            calls=platform.webrtc,
        ),
        routes_calls.router(
            tenants=platform.tenants,
            calls=platform.calls,
            audit=platform.audit,
            telephony=telephony,
            default_limits=platform.default_limits,
            subject_ref=platform.lifecycle.subject_ref,
            commands=platform.commands,
        ),
        routes_webhooks.router(
            tenants=platform.tenants,
            audit=platform.audit,
            writes=writes,
            endpoints=platform.webhook_endpoints,
            outbox=platform.outbox,
            tool_secrets=platform.tool_secrets,
            egress=platform.egress,
        ),
        routes_data.router(
            tenants=platform.tenants,
            calls=platform.calls,
            objects=platform.objects,
            lifecycle=platform.lifecycle,
            audit=platform.audit,
        ),
    ]


async def ready(platform: Platform) -> dict[str, Any]:
    """``/readyz``'s answer: room for a call, Redis, the models, the LLM server, the carriers.

    A draining or full process is not ready, so a load balancer sends new calls elsewhere
    (a webhook that still arrives gets the carrier's busy answer).

    Raises:
        NotReady: the first part that is not ready.
    """
    admission = platform.admission
    if admission.draining:
        raise NotReady(
            "Draining", "this process is shutting down and takes no new calls", "", "draining"
        )
    if admission.at_capacity(time.time()):
        await admission.settle_pending(time.time())
    if admission.at_capacity(time.time()):
        raise NotReady(
            "At capacity", "this process carries as many calls as it may", "", "at_capacity"
        )
    try:
        await platform.redis.ping()
    except Exception as e:  # any failure means not ready
        raise NotReady("State store unreachable", "the state store does not answer", e) from e
    missing = platform.engines.missing()
    if missing:
        raise NotReady("Models not loaded", "speech models are not loaded", missing)
    try:
        await probe(platform.engines.llm)
    except LLMUnavailable as e:
        raise NotReady("LLM unreachable", "the language model does not answer", e) from e
    now = time.time()
    usable = platform.health(now)
    carriers = {
        str(c): "up" if usable.usable(c, now) else "down"
        for c in sorted(platform.carriers, key=str)
    }
    answer: dict[str, Any] = {"status": "ready", "models": "loaded", "llm": "reachable"}
    answer["carriers"] = carriers
    if platform.sip_registrations is not None:
        # How many SIP accounts this process registers, per state; a customer's PBX that
        # is down is told here and never makes the process unready.
        answer["sip_accounts"] = platform.sip_registrations.counts()
    return answer
