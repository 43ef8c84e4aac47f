"""The ``bonmoniq`` command: run the platform, manage agents and numbers, place a test call."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from app import commands, logs
from app.settings import Settings


def _count(text: str) -> int:
    """A non-negative integer argument."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Run the platform until interrupted."""
    import uvloop

    from app.cluster_mode import check_cluster_mode

    check_cluster_mode(settings)  # before anything is imported, started or loaded
    from app.serve import serve

    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    # uvloop (uvicorn's own choice when it owns the loop): carrier webhooks and media sockets
    # are socket-bound work.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, demo=args.demo))


def cmd_llm_server(settings: Settings, args: argparse.Namespace) -> int:
    """Run the embedded LLM server (the cpu profile's model) until SIGTERM or SIGINT.

    Several platform processes on this machine or its network share it through
    ``BONMONIQ_LLM_URL``; it prints the value to give them.
    """
    import signal
    import socket
    import threading

    from app.runtime import embedded_server
    from models import Role, verify_profile

    llm = verify_profile("cpu", settings.models_cache)[Role.LLM]
    gguf = next(f.path for f in llm.files if f.path.suffix == ".gguf")
    server = embedded_server(settings, gguf, host=args.host, port=args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Listening on every address: the others reach it by this machine's name.
    host = socket.gethostname() if args.host in ("", "0.0.0.0", "::") else args.host
    with server:
        print(f"BONMONIQ_LLM_URL=http://{host}:{server.port}/v1", flush=True)
        while not stop.wait(0.5):
            if not server.alive():
                exited = f"the LLM server exited; see {server.log_path}"
                print(f"bonmoniq: error: {exited}", file=sys.stderr)
                return 1
    return 0


def cmd_models_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Check every model of a profile and print what was checked."""
    from models import Role, verify_profile, verify_voices

    profile = args.profile or settings.profile
    verified = verify_profile(profile, settings.models_cache)
    models = [m for role, m in verified.items() if role != Role.TTS]
    models += verify_voices(profile, settings.models_cache)  # every voice, the default first
    rows = []
    for model in models:
        role = model.spec.role
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


def cmd_call(settings: Settings, args: argparse.Namespace) -> int:
    """Place a simulated carrier call into a running platform."""
    from app.simulate import simulate

    return asyncio.run(simulate(settings, args))


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    p = argparse.ArgumentParser(prog="bonmoniq", description="Bonmoniq Voice platform")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the platform")
    default = Settings.model_fields
    host, port = default["host"].default, default["port"].default
    s.add_argument("--host", help=f"listen address (default BONMONIQ_HOST or {host})")
    s.add_argument("--port", type=int, help=f"listen port (default BONMONIQ_PORT or {port})")
    s.add_argument(
        "--demo", action="store_true", help="create a demo agent and number on empty state"
    )
    s.set_defaults(fn=cmd_serve)

    ls = sub.add_parser(
        "llm-server", help="run the embedded LLM server for several platform processes"
    )
    ls.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ls.add_argument("--port", type=int, default=8081, help="listen port (default 8081)")
    ls.set_defaults(fn=cmd_llm_server)

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
    tc.set_defaults(fn=commands.tenants_create)
    to = t.add_parser("offboard", help="export a tenant, then crypto-shred and delete it")
    to.add_argument("tenant", help="tenant id or name")
    to.add_argument("--export", type=Path, required=True, help="directory for the export zip")
    to.add_argument("--json", action="store_true")
    to.set_defaults(fn=commands.tenants_offboard)
    tr = t.add_parser("rotate-key", help="new tenant key; data keys re-wrapped")
    tr.add_argument("tenant", help="tenant id or name")
    tr.set_defaults(fn=commands.tenants_rotate_key)

    rs = sub.add_parser("retention", help="data retention").add_subparsers(
        dest="sub", required=True
    )
    sw = rs.add_parser("sweep", help="delete what is past retention (legal holds excepted)")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(fn=commands.retention_sweep)

    a = sub.add_parser("agents", help="agents").add_subparsers(dest="sub", required=True)
    aa = a.add_parser("add", help="create an agent")
    aa.add_argument("name")
    aa.add_argument("--prompt", required=True, help="system prompt")
    aa.add_argument(
        "--language", default="en", help="ISO 639-1 code, or auto: the caller's (default en)"
    )
    aa.add_argument("--greeting", help="first words after the announcement")
    aa.add_argument("--announcement", help="recording notice and AI disclosure")
    aa.add_argument("--record", action="store_true", help="record calls (after the announcement)")
    aa.add_argument("--no-transcripts", action="store_true", help="store no transcripts")
    aa.add_argument("--retention-days", type=_count, default=180, help="1-180 (default 180)")
    aa.set_defaults(fn=commands.agents_add)
    a.add_parser("list", help="list agents").set_defaults(fn=commands.agents_list)

    n = sub.add_parser("numbers", help="numbers").add_subparsers(dest="sub", required=True)
    na = n.add_parser("add", help="point a number at an agent")
    na.add_argument("number", help="E.164, e.g. +15555550100")
    na.add_argument("--agent", required=True)
    na.set_defaults(fn=commands.numbers_add)
    n.add_parser("list", help="list numbers").set_defaults(fn=commands.numbers_list)
    ns = n.add_parser("search", help="numbers for rent (carrier chosen by the routing policy)")
    ns.add_argument("--country", required=True, help="ISO code, e.g. FR or US")
    ns.add_argument("--area-code")
    ns.add_argument("--contains")
    ns.add_argument("--json", action="store_true")
    ns.set_defaults(fn=commands.numbers_search)
    nr = n.add_parser("rent", help="rent a number and point it at an agent")
    nr.add_argument("number")
    nr.add_argument("--agent", required=True)
    nr.set_defaults(fn=commands.numbers_rent)
    nl = n.add_parser("release", help="give a rented number back")
    nl.add_argument("number")
    nl.set_defaults(fn=commands.numbers_release)

    c = sub.add_parser("calls", help="calls").add_subparsers(dest="sub", required=True)
    cs = c.add_parser("show", help="state, events and transcript of a call")
    cs.add_argument("call_id")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(fn=commands.calls_show)
    cp = c.add_parser("place", help="place an outbound call (through the number's carrier)")
    cp.add_argument("--from", dest="from_", required=True, help="one of our numbers")
    cp.add_argument("--to", required=True)
    cp.set_defaults(fn=commands.calls_place)

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
        settings = Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"{Settings.env_name(e.title, err['loc'])}: {err['msg']}" for err in e.errors()
        )
        print(f"bonmoniq: error: invalid settings: {problems}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.pipecat_log_level)
    try:
        return int(args.fn(settings, args))
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
