"""What the ``bonmoniq`` commands do, each on the platform built by :func:`app.core.build_platform`.

A command opens Redis (through the sentinels when ``BONMONIQ_REDIS_SENTINELS`` is set, a local
redis-server when neither it nor ``BONMONIQ_REDIS_URL`` is), builds the part of the platform
every process has (no speech models, no LLM) and acts through it. Operator actions are written
to the audit log with the key id ``operator`` and ``{"via": "cli"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    from app.core import Core
    from recordings.keyring import KeyRing

#: The key id of operator actions in the audit log (the API's operator endpoints use it too).
OPERATOR = "operator"
#: What the key naming offboarded tenants in the operator's audit stream is derived for.
TENANT_REF_PURPOSE = "audit-tenant"


async def _run(settings: Settings, fn: Callable[[Core], Awaitable[int]], sealed: bool) -> int:
    """``fn`` on the platform of a command, Redis closed (and a local server stopped) after.

    ``sealed``: the command needs the master key (the audit log, the encrypted store); without
    ``sealed`` the encrypted store is opened when the key is there, sealed fields stay closed
    otherwise.
    """
    from app.core import build_platform, open_objects, open_store, readable_objects
    from app.local_redis import redis_url

    with redis_url(settings) as url:
        client = open_store(settings, url)
        try:
            objects = (open_objects if sealed else readable_objects)(settings, client)
            return await fn(build_platform(settings, client, objects=objects))
        finally:
            await client.aclose()


def run(settings: Settings, fn: Callable[[Core], Awaitable[int]], sealed: bool = False) -> int:
    """Run ``fn`` on the platform of a command (see :func:`_run`); its exit status."""
    return asyncio.run(_run(settings, fn, sealed))


async def audit_operator(core: Core, stream: str, action: str, target: str, **detail: Any) -> None:
    """Record an operator's action from the command line in the audit stream ``stream``.

    ``stream`` is a tenant id, or :data:`store.keys.OPERATOR_AUDIT` for actions no tenant's log
    can hold. No address and no request id: the action came from a shell on the platform's host.
    """
    await core.audit.append(
        stream,
        at=time.time(),
        key_id=OPERATOR,
        action=action,
        target=target,
        address="",
        request_id="",
        detail={"via": "cli", **detail},
    )


def tenant_ref(keyring: KeyRing, tenant: str) -> str:
    """How the operator's audit stream names an offboarded tenant: a keyed digest of its id.

    Nothing of an offboarded tenant stays in Redis, its id included; only a holder of the
    master key can tell which tenant an entry is about.
    """
    key = keyring.derived(TENANT_REF_PURPOSE)
    return "tenant:" + hmac.new(key, tenant.encode(), hashlib.sha256).hexdigest()[:24]


async def tenant_id(core: Core, given: str) -> str:
    """A tenant id from an id or a unique name."""
    from store import keys

    redis = core.redis
    if await redis.exists(keys.tenant(given)):
        return given
    found = [
        str(t)
        for t in await redis.smembers(keys.tenants())
        if await redis.hget(keys.tenant(str(t)), "name") == given
    ]
    if len(found) != 1:
        raise LookupError(
            f"no tenant {given!r}"
            if not found
            else f"several tenants are named {given!r}: use the id"
        )
    return found[0]


# -- tenants and retention (operator) ---------------------------------------------------------


def tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    """Create a tenant and its first admin key (printed once)."""
    from tenancy.limits import Limits

    default = settings.limits
    limits = Limits(
        default.calls_per_minute if args.calls_per_minute is None else args.calls_per_minute,
        default.concurrent_calls if args.concurrent_calls is None else args.concurrent_calls,
        default.daily_spend_cents if args.daily_spend_cents is None else args.daily_spend_cents,
    )

    async def act(core: Core) -> int:
        tenant, raw = await core.tenants.create_tenant(args.name, time.time(), limits)
        created = tenant.tenant_id
        detail = asdict(limits) | {"allowed_destinations": sorted(limits.allowed_destinations)}
        await audit_operator(core, created, "tenant.create", created, **detail)
        if args.json:
            print(json.dumps({"tenant_id": tenant.tenant_id, "api_key": raw}))
        else:
            print(f"tenant {tenant.tenant_id} ({tenant.name}) created")
            print(f"admin API key (shown once, store it now): {raw}")
        return 0

    return run(settings, act, sealed=True)


def tenants_offboard(settings: Settings, args: argparse.Namespace) -> int:
    """Export a tenant's data to a directory, then crypto-shred and forget the tenant."""
    from store import keys

    async def act(core: Core) -> int:
        tenant = await tenant_id(core, args.tenant)
        report = await core.lifecycle.offboard(tenant, args.export)
        # The tenant's own log went with it: the operator's stream keeps the record.
        gone = tenant_ref(core.sealed().keyring, tenant)
        calls = report["calls"]
        await audit_operator(core, keys.OPERATOR_AUDIT, "tenant.offboard", gone, calls=calls)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"tenant {tenant} exported to {report['export']} ({report['calls']} calls)")
            print("its key is destroyed: what it stored can no longer be decrypted")
            if report["numbers"]:
                print("release its numbers at their carriers: " + ", ".join(report["numbers"]))
        return 0

    return run(settings, act, sealed=True)


def tenants_rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    """Give a tenant a new KEK and re-wrap its data keys (no content is re-encrypted)."""

    async def act(core: Core) -> int:
        tenant = await tenant_id(core, args.tenant)
        lifecycle = core.lifecycle
        count = await lifecycle.objects.rotate_tenant_key(tenant, lifecycle.calls)
        await audit_operator(core, tenant, "tenant.rotate_key", tenant, data_keys=count)
        print(f"tenant {tenant}: new key, {count} data keys re-wrapped")
        return 0

    return run(settings, act, sealed=True)


def retention_sweep(settings: Settings, args: argparse.Namespace) -> int:
    """Delete every call past its agent's retention (legal holds excepted)."""
    from store import keys

    async def act(core: Core) -> int:
        done = await core.lifecycle.sweep(time.time())
        counts = {"erased": len(done.erased), "held": len(done.held)}
        await audit_operator(core, keys.OPERATOR_AUDIT, "retention.sweep", "", **counts)
        if args.json:
            print(json.dumps({"erased": done.erased, "held": done.held}))
        else:
            print(f"{len(done.erased)} calls erased, {len(done.held)} kept under legal hold")
        return 0

    return run(settings, act, sealed=True)


# -- agents and numbers -----------------------------------------------------------------------


def agents_add(settings: Settings, args: argparse.Namespace) -> int:
    """Create an agent."""
    from routing.directory import Agent
    from voice.announcement import check_announcement, default_announcement
    from voice.prompt import default_greeting
    from voice.voices import default_voice

    agent = Agent(
        name=args.name,
        prompt=args.prompt,
        language=args.language,
        voice=default_voice(settings.profile, args.language),
        greeting=args.greeting or default_greeting(args.language),
        announcement=args.announcement or default_announcement(args.language),
        recording=args.record,
        store_transcripts=not args.no_transcripts,
        retention_days=args.retention_days,
    )
    check_announcement(agent.announcement, agent.language)  # the API's rule, in its language

    async def act(core: Core) -> int:
        await core.directory.add_agent(agent)
        print(f"agent {agent.name} created ({agent.language})")
        return 0

    return run(settings, act)


def agents_list(settings: Settings, args: argparse.Namespace) -> int:
    """List agents."""

    async def act(core: Core) -> int:
        for a in await core.directory.list_agents():
            print(f"{a.name}\t{a.language}\t{a.prompt[:60]}")
        return 0

    return run(settings, act)


def numbers_add(settings: Settings, args: argparse.Namespace) -> int:
    """Point a number at an agent."""

    async def act(core: Core) -> int:
        route = await core.directory.add_number(args.number, args.agent)
        print(f"{route.number} -> agent {route.agent.name}")
        return 0

    return run(settings, act)


def numbers_list(settings: Settings, args: argparse.Namespace) -> int:
    """List numbers."""

    async def act(core: Core) -> int:
        for number, agent in await core.directory.list_numbers():
            print(f"{number}\t{agent}")
        return 0

    return run(settings, act)


def numbers_search(settings: Settings, args: argparse.Namespace) -> int:
    """Numbers for rent, from the carrier the routing policy picks for the country."""

    async def act(core: Core) -> int:
        decision, found = await core.telephony().search(args.country, args.area_code, args.contains)
        if args.json:
            shown = {"routing": decision.as_metadata(), "numbers": [n.__dict__ for n in found]}
            print(json.dumps(shown, indent=2))
            return 0
        print(f"via {decision.carrier}: {decision.reason}")
        for n in found:
            print(f"{n.number}\t{n.locality}")
        return 0

    return run(settings, act)


def numbers_rent(settings: Settings, args: argparse.Namespace) -> int:
    """Rent a number through the carrier the routing policy picks and point it at an agent."""
    from routing.directory import normalise_number

    async def act(core: Core) -> int:
        number = normalise_number(args.number)  # the first argument's error first
        agent = await core.directory.get_agent(args.agent)
        decision, rented, _ = await core.telephony().rent(number, agent)
        print(f"{rented.number} rented from {rented.carrier} ({decision.reason})")
        print(f"{rented.number} -> agent {args.agent}")
        return 0

    return run(settings, act)


def numbers_release(settings: Settings, args: argparse.Namespace) -> int:
    """Give a rented number back to its carrier."""

    async def act(core: Core) -> int:
        released = await core.telephony().release(args.number)
        if released is None:
            raise LookupError(f"{args.number} is not a number rented through the platform")
        print(f"{released.number} released to {released.carrier}")
        return 0

    return run(settings, act)


# -- calls ------------------------------------------------------------------------------------


def calls_place(settings: Settings, args: argparse.Namespace) -> int:
    """Place an outbound call from one of our numbers."""

    async def act(core: Core) -> int:
        placed = await core.telephony().place_call(args.from_, args.to)
        print(f"{placed.call_id} placed via {placed.decision.carrier} ({placed.decision.reason})")
        return 0

    return run(settings, act)


async def call_report(core: Core, call_id: str) -> dict[str, Any] | None:
    """State, events and transcript of a call, as ``calls show --json`` prints them.

    The transcript is decrypted with the platform's master key (``null`` without one).
    """
    store = core.calls
    record = await store.get(call_id)
    if record is None:
        return None
    return {
        **asdict(record),
        "events": [
            {"type": str(e.type), "at": e.at, "data": dict(e.data)}
            for e in await store.events(call_id)
        ],
        "transcript": (
            [asdict(t) for t in await store.transcript(call_id)] if store.objects else None
        ),
    }


def calls_show(settings: Settings, args: argparse.Namespace) -> int:
    """Print a call."""

    async def act(core: Core) -> int:
        report = await call_report(core, args.call_id)
        if report is None:
            raise LookupError(f"no call {args.call_id}")
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        print(
            f"{report['call_id']}  {report['state']}  "
            f"{report['from_number']} -> {report['to_number']}"
        )
        for e in report["events"]:
            print(f"  {e['at']:.3f} {e['type']} {json.dumps(e['data']) if e['data'] else ''}")
        for t in report["transcript"] or []:
            print(f"  [{t['role']}] {t['text']}")
        return 0

    return run(settings, act)
