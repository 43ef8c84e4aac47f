"""The ``bonmoniq`` command: run the platform, manage agents and numbers, place a test call."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app import logs
from app.settings import Settings

log = logging.getLogger("bonmoniq")


def _count(text: str) -> int:
    """A non-negative integer argument."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _settings() -> Settings:
    return Settings()


async def _with_directory(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    from store.redis import connect, redis_url

    with redis_url(settings) as url:
        client = connect(url)
        try:
            return await fn(client)
        finally:
            await client.aclose()


async def _with_telephony(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    from app.runtime import open_objects
    from calls.store import CallStore
    from routing.directory import Directory
    from routing.policy import Policy
    from routing.subprocessors import Register
    from store.redis import PlatformError, connect, redis_url
    from telephony.accounts import controls_for, health_at, load_accounts
    from telephony.outbound import Telephony

    accounts = load_accounts(settings)
    register = Register.load()
    down: dict[Any, float] = {}
    with redis_url(settings) as url:
        client = connect(url)
        try:
            try:  # a call's parties are sealed: placing one needs the master key
                calls = CallStore(client, open_objects(settings, client))
            except PlatformError:
                calls = CallStore(client)
            telephony = Telephony(
                settings, Directory(client), calls,
                Policy.load(settings.routing_policy),
                lambda now: health_at(accounts, register, now, down), controls_for(accounts),
                down.__setitem__,
            )  # fmt: skip
            return await fn(telephony)
        finally:
            await client.aclose()


# -- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the platform until interrupted."""
    import uvloop

    from app.serve import serve

    settings = _settings()
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    # uvloop (uvicorn's own choice when it owns the loop): carrier webhooks and media sockets
    # are socket-bound work.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, demo=args.demo))


def cmd_models_verify(args: argparse.Namespace) -> int:
    """Check every model of a profile and print what was checked."""
    from models import verify_profile

    settings = _settings()
    verified = verify_profile(args.profile or settings.profile, settings.models_cache)
    rows = []
    for role, model in verified.items():
        for f in model.files:
            rows.append(
                {
                    "role": str(role),
                    "model": model.spec.name,
                    "path": str(f.path),
                    "size": f.size,
                    "sha256": f.sha256,
                    "licence": model.spec.licence,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(
                f"{row['role']:4} {row['model']:24} {row['licence']:11} {row['size']:>11,} "
                f"{row['sha256']}  {row['path']}"
            )
        print(f"ok: {len(rows)} files of {len(verified)} models match their pins")
    return 0


def cmd_tenants_create(args: argparse.Namespace) -> int:
    """Create a tenant and its first admin key (printed once)."""
    import time

    from tenancy.limits import Limits
    from tenancy.tenants import TenantStore

    settings = _settings()
    limits = Limits(
        args.calls_per_minute
        if args.calls_per_minute is not None
        else settings.limits.calls_per_minute,
        args.concurrent_calls
        if args.concurrent_calls is not None
        else settings.limits.concurrent_calls,
        args.daily_spend_cents
        if args.daily_spend_cents is not None
        else settings.limits.daily_spend_cents,
    )

    async def run(client: Any) -> int:
        tenant, raw = await TenantStore(client).create_tenant(args.name, time.time(), limits)
        if args.json:
            print(json.dumps({"tenant_id": tenant.tenant_id, "api_key": raw}))
        else:
            print(f"tenant {tenant.tenant_id} ({tenant.name}) created")
            print(f"admin API key (shown once, store it now): {raw}")
        return 0

    return asyncio.run(_with_directory(settings, run))


async def _tenant_id(client: Any, given: str) -> str:
    """A tenant id from an id or a unique name."""
    from store import keys

    if await client.exists(keys.tenant(given)):
        return given
    found = [
        str(t) for t in await client.smembers(keys.TENANTS)
        if await client.hget(keys.tenant(str(t)), "name") == given
    ]  # fmt: skip
    if len(found) != 1:
        raise LookupError(
            f"no tenant {given!r}"
            if not found
            else f"several tenants are named {given!r}: use the id"
        )
    return found[0]


def _lifecycle(settings: Settings, client: Any) -> Any:
    from app.runtime import open_objects
    from recordings.lifecycle import Lifecycle

    return Lifecycle(client, open_objects(settings, client))


def cmd_tenants_offboard(args: argparse.Namespace) -> int:
    """Export a tenant's data to a directory, then crypto-shred and forget the tenant."""
    settings = _settings()

    async def run(client: Any) -> int:
        tenant = await _tenant_id(client, args.tenant)
        report = await _lifecycle(settings, client).offboard(tenant, args.export)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"tenant {tenant} exported to {report['export']} ({report['calls']} calls)")
            print("its key is destroyed: what it stored can no longer be decrypted")
            if report["numbers"]:
                print("release its numbers at their carriers: " + ", ".join(report["numbers"]))
        return 0

    return asyncio.run(_with_directory(settings, run))


def cmd_tenants_rotate_key(args: argparse.Namespace) -> int:
    """Give a tenant a new KEK and re-wrap its data keys (no content is re-encrypted)."""
    settings = _settings()

    async def run(client: Any) -> int:
        tenant = await _tenant_id(client, args.tenant)
        count = await _lifecycle(settings, client).objects.rotate_tenant_key(tenant)
        print(f"tenant {tenant}: new key, {count} data keys re-wrapped")
        return 0

    return asyncio.run(_with_directory(settings, run))


def cmd_retention_sweep(args: argparse.Namespace) -> int:
    """Delete every call past its agent's retention (legal holds excepted)."""
    import time

    settings = _settings()

    async def run(client: Any) -> int:
        done = await _lifecycle(settings, client).sweep(time.time())
        if args.json:
            print(json.dumps({"erased": done.erased, "held": done.held}))
        else:
            print(f"{len(done.erased)} calls erased, {len(done.held)} kept under legal hold")
        return 0

    return asyncio.run(_with_directory(settings, run))


def cmd_agents_add(args: argparse.Namespace) -> int:
    """Create an agent."""
    from routing.directory import DEFAULT_GREETING, Agent, Directory
    from voice.announcement import check_announcement, default_announcement

    agent = Agent(
        name=args.name,
        prompt=args.prompt,
        language=args.language,
        greeting=args.greeting or DEFAULT_GREETING,
        announcement=args.announcement or default_announcement(args.language),
        recording=args.record,
        store_transcripts=not args.no_transcripts,
        retention_days=args.retention_days,
    )
    check_announcement(agent.announcement, agent.language)  # the API's rule, in its language

    async def run(client: Any) -> int:
        await Directory(client).add_agent(agent)
        print(f"agent {agent.name} created ({agent.language})")
        return 0

    return asyncio.run(_with_directory(_settings(), run))


def cmd_agents_list(args: argparse.Namespace) -> int:
    """List agents."""
    from routing.directory import Directory

    async def run(client: Any) -> int:
        for a in await Directory(client).list_agents():
            print(f"{a.name}\t{a.language}\t{a.prompt[:60]}")
        return 0

    return asyncio.run(_with_directory(_settings(), run))


def cmd_numbers_add(args: argparse.Namespace) -> int:
    """Point a number at an agent."""
    from routing.directory import Directory

    async def run(client: Any) -> int:
        route = await Directory(client).add_number(args.number, args.agent)
        print(f"{route.number} -> agent {route.agent.name}")
        return 0

    return asyncio.run(_with_directory(_settings(), run))


def cmd_numbers_search(args: argparse.Namespace) -> int:
    """Numbers for rent, from the carrier the routing policy picks for the country."""

    async def run(t: Any) -> int:
        decision, found = await t.search(args.country, args.area_code, args.contains)
        if args.json:
            print(json.dumps({"routing": decision.as_metadata(),
                              "numbers": [n.__dict__ for n in found]}, indent=2))  # fmt: skip
            return 0
        print(f"via {decision.carrier}: {decision.reason}")
        for n in found:
            print(f"{n.number}\t{n.locality}")
        return 0

    return asyncio.run(_with_telephony(_settings(), run))


def cmd_numbers_rent(args: argparse.Namespace) -> int:
    """Rent a number through the carrier the routing policy picks and point it at an agent."""

    async def run(t: Any) -> int:
        from routing.directory import normalise_number

        number = normalise_number(args.number)  # the first argument's error first
        decision, rented, _ = await t.rent(number, await t.directory.get_agent(args.agent))
        print(f"{rented.number} rented from {rented.carrier} ({decision.reason})")
        print(f"{rented.number} -> agent {args.agent}")
        return 0

    return asyncio.run(_with_telephony(_settings(), run))


def cmd_numbers_release(args: argparse.Namespace) -> int:
    """Give a rented number back to its carrier."""

    async def run(t: Any) -> int:
        released = await t.release(args.number)
        if released is None:
            raise LookupError(f"{args.number} is not a number rented through the platform")
        print(f"{released.number} released to {released.carrier}")
        return 0

    return asyncio.run(_with_telephony(_settings(), run))


def cmd_calls_place(args: argparse.Namespace) -> int:
    """Place an outbound call from one of our numbers."""

    async def run(t: Any) -> int:
        placed = await t.place_call(args.from_, args.to)
        print(f"{placed.call_id} placed via {placed.decision.carrier} ({placed.decision.reason})")
        return 0

    return asyncio.run(_with_telephony(_settings(), run))


def cmd_numbers_list(args: argparse.Namespace) -> int:
    """List numbers."""
    from routing.directory import Directory

    async def run(client: Any) -> int:
        for number, agent in await Directory(client).list_numbers():
            print(f"{number}\t{agent}")
        return 0

    return asyncio.run(_with_directory(_settings(), run))


async def call_report(client: Any, call_id: str, settings: Settings) -> dict[str, Any] | None:
    """State, events and transcript of a call, as ``calls show --json`` prints them.

    The transcript is decrypted with the master key of ``settings`` (``null`` without one).
    """
    from dataclasses import asdict

    from app.runtime import open_objects
    from calls.store import CallStore
    from store.redis import PlatformError

    try:
        store = CallStore(client, open_objects(settings, client))
    except PlatformError:
        store = CallStore(client)
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


def cmd_calls_show(args: argparse.Namespace) -> int:
    """Print a call."""
    settings = _settings()

    async def run(client: Any) -> int:
        report = await call_report(client, args.call_id, settings)
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

    return asyncio.run(_with_directory(settings, run))


def cmd_call(args: argparse.Namespace) -> int:
    """Place a simulated Twilio call into a running platform."""
    from app.simulate import simulate

    return asyncio.run(simulate(_settings(), args))


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    p = argparse.ArgumentParser(prog="bonmoniq", description="Bonmoniq Voice platform")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the platform")
    s.add_argument("--host", help="listen address (default BONMONIQ_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default BONMONIQ_PORT or 8000)")
    s.add_argument(
        "--demo", action="store_true", help="create a demo agent and number on empty state"
    )
    s.set_defaults(fn=cmd_serve)

    m = sub.add_parser("models", help="the model catalogue").add_subparsers(
        dest="sub", required=True
    )
    v = m.add_parser("verify", help="check (and assemble) every model of a profile")
    v.add_argument("--profile", help="cpu or gpu (default BONMONIQ_PROFILE)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_models_verify)

    t = sub.add_parser("tenants", help="tenants (operator)").add_subparsers(
        dest="sub", required=True
    )
    tc = t.add_parser("create", help="create a tenant and its first admin key")
    tc.add_argument("name")
    tc.add_argument("--json", action="store_true")
    for flag, what in (
        ("--calls-per-minute", "outbound calls placed a minute"),
        ("--concurrent-calls", "outbound calls open at once"),
        ("--daily-spend-cents", "outbound spend a UTC day, in cents"),
    ):
        tc.add_argument(flag, type=_count, help=f"limit: {what} (default: BONMONIQ_* setting)")
    tc.set_defaults(fn=cmd_tenants_create)
    to = t.add_parser("offboard", help="export a tenant, then crypto-shred and delete it")
    to.add_argument("tenant", help="tenant id or name")
    to.add_argument("--export", type=Path, required=True, help="directory for the export zip")
    to.add_argument("--json", action="store_true")
    to.set_defaults(fn=cmd_tenants_offboard)
    tr = t.add_parser("rotate-key", help="new tenant key; data keys re-wrapped")
    tr.add_argument("tenant", help="tenant id or name")
    tr.set_defaults(fn=cmd_tenants_rotate_key)

    rs = sub.add_parser("retention", help="data retention").add_subparsers(
        dest="sub", required=True
    )
    sw = rs.add_parser("sweep", help="delete what is past retention (legal holds excepted)")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(fn=cmd_retention_sweep)

    a = sub.add_parser("agents", help="agents").add_subparsers(dest="sub", required=True)
    aa = a.add_parser("add", help="create an agent")
    aa.add_argument("name")
    aa.add_argument("--prompt", required=True, help="system prompt")
    aa.add_argument("--language", default="en", help="ISO 639-1 code (default en)")
    aa.add_argument("--greeting", help="first words after the announcement")
    aa.add_argument("--announcement", help="recording notice and AI disclosure")
    aa.add_argument("--record", action="store_true", help="record calls (after the announcement)")
    aa.add_argument("--no-transcripts", action="store_true", help="store no transcripts")
    aa.add_argument("--retention-days", type=_count, default=180, help="1-180 (default 180)")
    aa.set_defaults(fn=cmd_agents_add)
    a.add_parser("list", help="list agents").set_defaults(fn=cmd_agents_list)

    n = sub.add_parser("numbers", help="numbers").add_subparsers(dest="sub", required=True)
    na = n.add_parser("add", help="point a number at an agent")
    na.add_argument("number", help="E.164, e.g. +15555550100")
    na.add_argument("--agent", required=True)
    na.set_defaults(fn=cmd_numbers_add)
    n.add_parser("list", help="list numbers").set_defaults(fn=cmd_numbers_list)
    ns = n.add_parser("search", help="numbers for rent (carrier chosen by the routing policy)")
    ns.add_argument("--country", required=True, help="ISO code, e.g. FR or US")
    ns.add_argument("--area-code")
    ns.add_argument("--contains")
    ns.add_argument("--json", action="store_true")
    ns.set_defaults(fn=cmd_numbers_search)
    nr = n.add_parser("rent", help="rent a number and point it at an agent")
    nr.add_argument("number")
    nr.add_argument("--agent", required=True)
    nr.set_defaults(fn=cmd_numbers_rent)
    nl = n.add_parser("release", help="give a rented number back")
    nl.add_argument("number")
    nl.set_defaults(fn=cmd_numbers_release)

    c = sub.add_parser("calls", help="calls").add_subparsers(dest="sub", required=True)
    cs = c.add_parser("show", help="state, events and transcript of a call")
    cs.add_argument("call_id")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(fn=cmd_calls_show)
    cp = c.add_parser("place", help="place an outbound call (through the number's carrier)")
    cp.add_argument("--from", dest="from_", required=True, help="one of our numbers")
    cp.add_argument("--to", required=True)
    cp.set_defaults(fn=cmd_calls_place)

    k = sub.add_parser("call", help="place a simulated carrier call into a running platform")
    k.add_argument("--carrier", choices=["twilio", "telnyx", "sinch"], default="twilio")
    k.add_argument("--to", default=None, help="number to call (default: the demo number)")
    k.add_argument("--from", dest="from_", default="+15555550123", help="caller's number")
    k.add_argument("--say", action="append", default=[], help="a sentence to say (repeatable)")
    k.add_argument(
        "--wav", action="append", type=Path, default=[], help="a mono WAV to play (repeatable)"
    )
    k.add_argument(
        "--out", type=Path, default=Path("call.wav"), help="where to write the agent's audio"
    )
    k.add_argument("--url", help="where to send requests if not BONMONIQ_PUBLIC_URL")
    k.add_argument(
        "--barge-in",
        type=float,
        metavar="SECONDS",
        help="say each next line this long after the agent starts answering (talk over it)",
    )
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.set_defaults(fn=cmd_call)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bonmoniq`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = _settings()
    except ValidationError as e:
        problems = "; ".join(
            f"BONMONIQ_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        print(f"bonmoniq: error: invalid settings: {problems}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.pipecat_log_level)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        code = getattr(e, "code", None)
        if code is None and type(e).__module__.startswith(("redis", "httpx", "websockets")):
            code = "unavailable"
        if code is None and not isinstance(e, (LookupError, ValueError, OSError)):
            raise
        print(f"bonmoniq: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
