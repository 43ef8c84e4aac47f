"""The SIP stack against SIPp as the registrar (digest verified by SIPp), on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from carriers.sip.stack import AccountConfig, RegState, SipStack
from cluster.lease import Lease
from integrations.sealed import Sealer
from recordings.keyring import KeyRing
from telephony.admission import Admission
from telephony.sip import SipAccounts, SipRegistrations
from tests.conftest import MASTER_KEY
from tests.sip_helpers import REGISTRAR_PASSWORD as PASSWORD
from tests.sip_helpers import REGISTRAR_USERNAME as USERNAME
from tests.sip_helpers import SIPP, free_udp_port, registrar, until

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) missing")


def account(port: int, password: str = PASSWORD, account_id: str = "sip_a") -> AccountConfig:
    return AccountConfig(account_id, "127.0.0.1", port, "udp", USERNAME, password, None, 60)


@pytest.fixture
async def stack() -> AsyncIterator[SipStack]:
    s = SipStack("127.0.0.1", 0)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def state(stack: SipStack, account_id: str = "sip_a") -> RegState:
    return stack.states()[account_id].state


async def test_right_password_registers(stack: SipStack, tmp_path: Path) -> None:
    seen: list[tuple[str, RegState]] = []
    stack.on_state(lambda a, s: seen.append((a, s.state)))
    async with registrar(tmp_path) as r:
        stack.register(account(r.port))
        await until(lambda: state(stack) == RegState.REGISTERED)
        status = stack.states()["sip_a"]
        assert status.expires_at is not None and status.expires_at > time.time()
        assert status.last_status == 200 and status.next_attempt_at is None
        assert r.registers() >= 2  # challenged, then answered with credentials
    assert seen[0] == ("sip_a", RegState.REGISTERING) and seen[-1][1] == RegState.REGISTERED


async def test_wrong_password_is_rejected_without_retrying(stack: SipStack, tmp_path: Path) -> None:
    async with registrar(tmp_path) as r:
        stack.register(account(r.port, password="not-the-password"))
        await until(lambda: state(stack) == RegState.REJECTED)
        status = stack.states()["sip_a"]
        assert status.last_status == 403
        assert status.next_attempt_at is not None
        assert status.next_attempt_at - time.time() > 600  # a long wait, not a retry loop
        sent = r.registers()
        reg = stack.registration("sip_a")
        assert reg is not None and reg.register_count == 2 and sent == 2


async def test_closed_port_is_unreachable_with_backoff_and_others_register(
    stack: SipStack, tmp_path: Path
) -> None:
    closed = free_udp_port()
    async with registrar(tmp_path) as r:
        stack.register(account(closed, account_id="sip_dead"))
        stack.register(account(r.port, account_id="sip_live"))
        await until(lambda: state(stack, "sip_dead") == RegState.UNREACHABLE)
        dead = stack.states()["sip_dead"]
        assert dead.next_attempt_at is not None and dead.next_attempt_at > time.time()
        await until(lambda: state(stack, "sip_live") == RegState.REGISTERED)
        # The next attempts back off: each failure waits longer than the last's floor.
        reg = stack.registration("sip_dead")
        assert reg is not None
        await until(lambda: reg.failures >= 2)
        assert state(stack, "sip_live") == RegState.REGISTERED


async def test_malformed_datagrams_are_dropped_and_the_stack_keeps_answering(
    stack: SipStack, tmp_path: Path
) -> None:
    junk = [
        b"INVITE garbage\r\n\r\n",
        b"\x00\xff" * 300,
        b"SIP/2.0 200\r\n\r\n",
        b"REGISTER sip:x SIP/2.0\r\nVia: nonsense\r\nCSeq: x\r\n\r\n",
        b"",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for datagram in junk:
            s.sendto(datagram, ("127.0.0.1", stack.port))
        await until(lambda: stack.dropped >= 2)
        # Still answering: an OPTIONS gets its 200.
        s.sendto(
            (
                f"OPTIONS sip:probe@127.0.0.1:{stack.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bKprobe1\r\n"
                "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
                "Call-ID: probe-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", stack.port),
        )
        s.setblocking(False)
        loop = asyncio.get_running_loop()
        answer = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
    assert answer.startswith(b"SIP/2.0 200")
    async with registrar(tmp_path) as r:
        stack.register(account(r.port))
        await until(lambda: state(stack) == RegState.REGISTERED)


async def test_registration_is_refreshed_before_it_expires(stack: SipStack, tmp_path: Path) -> None:
    async with registrar(tmp_path, expires=2) as r:
        stack.register(account(r.port))
        await until(lambda: state(stack) == RegState.REGISTERED)
        first = stack.states()["sip_a"].expires_at
        assert first is not None
        # A refresh (challenged again) reaches SIPp before the 2 s binding runs out.
        await until(lambda: r.registers() >= 4)
        await until(lambda: (stack.states()["sip_a"].expires_at or 0) > first)
        assert state(stack) == RegState.REGISTERED


async def test_the_refresh_follows_our_own_bindings_expiry(stack: SipStack, tmp_path: Path) -> None:
    # The 200 lists another binding of the AOR (3600 s) before ours (2 s), Expires: 3600.
    scenario = SIPP / "registrar_bindings.xml"
    async with registrar(tmp_path, expires=2, scenario=scenario) as r:
        stack.register(account(r.port))
        await until(lambda: state(stack) == RegState.REGISTERED)
        expires_at = stack.states()["sip_a"].expires_at
        assert expires_at is not None and expires_at - time.time() <= 2
        # refreshed before our 2 s run out (challenged again: two more REGISTERs)
        await until(lambda: r.registers() >= 4)
        assert state(stack) == RegState.REGISTERED


async def test_invite_without_handler_gets_480(stack: SipStack) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        s.sendto(
            (
                f"INVITE sip:someone@127.0.0.1:{stack.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKinv1\r\n"
                "From: <sip:caller@127.0.0.1>;tag=9\r\nTo: <sip:someone@127.0.0.1>\r\n"
                "Call-ID: inv-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", stack.port),
        )
        loop = asyncio.get_running_loop()
        codes: list[int] = []
        while not codes or codes[-1] < 200:
            data = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
            codes.append(int(data.split(b" ", 2)[1]))
    assert codes[-1] == 480


async def test_invite_reaches_the_handler_with_its_account(stack: SipStack, tmp_path: Path) -> None:
    got: list[str | None] = []

    async def handler(call: object, account_id: str | None) -> None:
        got.append(account_id)
        call.reject(486)  # type: ignore[attr-defined]

    stack.on_invite(handler)
    async with registrar(tmp_path) as r:
        stack.register(account(r.port))
        await until(lambda: state(stack) == RegState.REGISTERED)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        s.sendto(
            (
                f"INVITE sip:sip_a@127.0.0.1:{stack.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKinv2\r\n"
                "From: <sip:caller@127.0.0.1>;tag=9\r\nTo: <sip:1001@127.0.0.1>\r\n"
                "Call-ID: inv-2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", stack.port),
        )
        await until(lambda: bool(got))
    assert got == ["sip_a"]


async def invite_from(host: str, stack_port: int, user: str, call_id: str) -> int:
    """Send an INVITE for ``user`` from ``host`` (a loopback address); its final status."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        s.sendto(
            (
                f"INVITE sip:{user}@127.0.0.1:{stack_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call_id}\r\n"
                f"From: <sip:caller@{host}>;tag=9\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:caller@{host}:{port}>\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", stack_port),
        )
        loop = asyncio.get_running_loop()
        codes: list[int] = []
        while not codes or codes[-1] < 200:
            data = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
            codes.append(int(data.split(b" ", 2)[1]))
    return codes[-1]


async def test_invites_come_only_from_the_registrar_or_trusted_peers(tmp_path: Path) -> None:
    got: list[str | None] = []

    async def handler(call: object, account_id: str | None) -> None:
        got.append(account_id)
        call.reject(486)  # type: ignore[attr-defined]

    trusting = SipStack("127.0.0.1", 0, tcp=False, trusted=["127.0.0.3/32"])
    await trusting.start()
    trusting.on_invite(handler)
    try:
        async with registrar(tmp_path) as r:
            trusting.register(account(r.port))
            await until(lambda: state(trusting) == RegState.REGISTERED)
        # another host: refused before the handler (no call is made of it)
        assert await invite_from("127.0.0.2", trusting.port, "sip_a", "src-1") == 403
        assert got == []
        # the registrar's address and a trusted peer reach the account
        assert await invite_from("127.0.0.1", trusting.port, "sip_a", "src-2") == 486
        assert await invite_from("127.0.0.3", trusting.port, "sip_a", "src-3") == 486
        # the account's username is not a way in: no account
        assert await invite_from("127.0.0.1", trusting.port, "1001", "src-4") == 486
        assert got == ["sip_a", "sip_a", None]
    finally:
        await trusting.stop()


async def test_a_retransmitted_invite_is_answered_again_not_dispatched_again(
    stack: SipStack,
) -> None:
    got: list[str | None] = []
    answer = asyncio.Event()

    async def handler(call: object, account_id: str | None) -> None:
        got.append(account_id)
        await answer.wait()
        call.reject(486)  # type: ignore[attr-defined]

    stack.on_invite(handler)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        invite = (
            f"INVITE sip:nobody@127.0.0.1:{stack.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKrtx1\r\n"
            "From: <sip:caller@127.0.0.1>;tag=9\r\nTo: <sip:nobody@127.0.0.1>\r\n"
            "Call-ID: rtx-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        ).encode()

        async def reply() -> bytes:
            return await asyncio.wait_for(loop.sock_recv(s, 4096), 5)

        s.sendto(invite, ("127.0.0.1", stack.port))
        first = await reply()
        assert first.startswith(b"SIP/2.0 100")
        s.sendto(invite, ("127.0.0.1", stack.port))  # the 100 was lost, say
        assert (await reply()).startswith(b"SIP/2.0 100")
        await until(lambda: bool(got))
        answer.set()
        final = await reply()
        assert final.startswith(b"SIP/2.0 486")
        s.sendto(invite, ("127.0.0.1", stack.port))  # the 486 was lost: the same 486 again
        again = await reply()
        assert again.startswith(b"SIP/2.0 486")
        tag = [h for h in final.split(b"\r\n") if h.lower().startswith(b"to:")]
        assert tag == [h for h in again.split(b"\r\n") if h.lower().startswith(b"to:")]
    assert got == [None]


async def test_tcp_account_registers_over_tcp(stack: SipStack, tmp_path: Path) -> None:
    async with registrar(tmp_path, transport="tcp") as r:
        config = AccountConfig("sip_t", "127.0.0.1", r.port, "tcp", USERNAME, PASSWORD, None, 60)
        stack.register(config)
        await until(lambda: state(stack, "sip_t") == RegState.REGISTERED)
        assert "SIP/2.0/TCP" in r.messages.read_text(errors="replace")


def leases(redis: Redis, node: str) -> Callable[[str], Lease]:
    """Leases of one second held by ``node``."""
    return lambda name: Lease(redis, name, 1.0, node)


async def test_one_process_registers_an_account_and_another_takes_over(
    redis: Redis, tmp_path: Path
) -> None:
    accounts = SipAccounts(redis, Sealer(KeyRing(redis, MASTER_KEY)))
    stacks = [SipStack("127.0.0.1", 0, tcp=False) for _ in range(2)]
    services = []
    for i, s in enumerate(stacks):
        await s.start()
        services.append(SipRegistrations(accounts, s, leases(redis, f"node-{i}"), poll_s=0.2))
    tasks = [asyncio.create_task(service.run()) for service in services[:1]]
    try:
        async with registrar(tmp_path) as r:
            values = {"name": "pbx", "provider": "pbx", "registrar": "127.0.0.1", "port": r.port,
                      "transport": "udp", "username": USERNAME, "domain": None,
                      "agent_id": "agt_0", "expires_s": 60}  # fmt: skip
            made = await accounts.create("t1", values, PASSWORD)
            await until(lambda: made.account_id in stacks[0].states())
            tasks.append(asyncio.create_task(services[1].run()))
            await until(lambda: stacks[0].states()[made.account_id].state == RegState.REGISTERED)
            for _ in range(3):  # the second process leaves it alone while the first holds it
                await services[1].reconcile()
                assert made.account_id not in stacks[1].states()
            # The first process ends: the second takes the account over once the lease lapses.
            tasks[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[0]
            await until(lambda: made.account_id in stacks[1].states())
            await until(lambda: stacks[1].states()[made.account_id].state == RegState.REGISTERED)
            # Deleting the account stops its registration.
            await accounts.delete("t1", made.account_id)
            services[1].poke()
            await until(lambda: made.account_id not in stacks[1].states())
            assert (await accounts.registration(made.account_id)).state == RegState.STOPPED
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for s in stacks:
            await s.stop()


async def test_a_draining_process_unregisters_and_another_takes_over_at_once(
    redis: Redis, tmp_path: Path
) -> None:
    accounts = SipAccounts(redis, Sealer(KeyRing(redis, MASTER_KEY)))
    stacks = [SipStack("127.0.0.1", 0, tcp=False) for _ in range(2)]
    services = []
    for i, s in enumerate(stacks):
        await s.start()
        # leases of an hour: the second process gets the account only if it is given back
        node = f"node-{i}"
        services.append(
            SipRegistrations(accounts, s, lambda n, node=node: Lease(redis, n, 3600.0, node),
                             poll_s=0.2)
        )  # fmt: skip
    tasks = [asyncio.create_task(service.run()) for service in services]
    try:
        async with registrar(tmp_path) as r:
            values = {"name": "pbx", "provider": "pbx", "registrar": "127.0.0.1", "port": r.port,
                      "transport": "udp", "username": USERNAME, "domain": None,
                      "agent_id": "agt_0", "expires_s": 60}  # fmt: skip
            made = await accounts.create("t1", values, PASSWORD)
            holder = await until_one_registers(stacks, made.account_id)
            other = 1 - holder
            # the process drains (SIGTERM): its admission tells its registrations
            admission = Admission(redis, 10, 10, 3600)
            admission.drain_listeners.append(services[holder].drain)
            admission.drain()
            await until(lambda: made.account_id not in stacks[holder].states())
            await until(lambda: "Expires: 0" in r.messages.read_text(errors="replace"))
            await until(lambda: made.account_id in stacks[other].states())
            await until(
                lambda: stacks[other].states()[made.account_id].state == RegState.REGISTERED
            )
            # the draining process takes no lease again
            await services[holder].reconcile()
            assert made.account_id not in stacks[holder].states()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for s in stacks:
            await s.stop()


async def until_one_registers(stacks: list[SipStack], account_id: str) -> int:
    """The index of the stack that registers ``account_id`` (once it is registered)."""

    def holder() -> int | None:
        for i, s in enumerate(stacks):
            status = s.states().get(account_id)
            if status is not None and status.state == RegState.REGISTERED:
                return i
        return None

    await until(lambda: holder() is not None)
    found = holder()
    assert found is not None
    return found
