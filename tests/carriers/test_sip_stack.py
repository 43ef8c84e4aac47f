"""The SIP stack's call signalling on loopback: CANCEL, TCP, its tables, REFER (SIPp as the PBX)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiosipua.transaction
import pytest
from aiosipua.dialog import DialogState
from aiosipua.incoming_call import IncomingCall
from aiosipua.message import SipMessage, SipResponse

from carriers.sip.stack import AccountConfig, ReferFailed, SipStack, SipTimers, _Register
from tests.sip_helpers import SIPP, SipPeer, free_udp_port, header, headers, status, until


@pytest.fixture
async def stack() -> AsyncIterator[SipStack]:
    # 64 x T1 of half a second: what is over leaves the tables soon
    s = SipStack("127.0.0.1", 0, timers=SipTimers(timeout=0.5))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def empty(stack: SipStack) -> bool:
    return all(n == 0 for n in stack.table_sizes().values())


async def test_cancel_before_the_answer_gets_200_and_487_and_nothing_else(
    stack: SipStack,
) -> None:
    go = asyncio.Event()
    cancelled: list[bool] = []

    async def handler(call: IncomingCall, _account: str | None) -> None:
        await go.wait()
        cancelled.append(call.dialog.state == DialogState.TERMINATED)

    stack.on_invite(handler)
    peer = SipPeer(stack.port)
    try:
        peer.send(peer.invite("sip_x", "cancel-1"))
        assert status(await peer.receive()) == 100
        peer.send(peer.cancel("sip_x", "cancel-1"))
        answers = {}
        for _ in range(2):
            answer = await peer.receive()
            answers[header(answer, "CSeq").split()[1]] = answer
        assert {m: status(a) for m, a in answers.items()} == {"CANCEL": 200, "INVITE": 487}
        peer.send(peer.in_dialog("ACK", answers["INVITE"], 1))
        go.set()
        await until(lambda: bool(cancelled))
        assert cancelled == [True]
        await until(lambda: empty(stack))
        # a CANCEL for an INVITE nobody knows: 481
        peer.send(peer.cancel("sip_x", "cancel-unknown"))
        assert status(await peer.receive()) == 481
    finally:
        peer.close()


async def test_a_cancel_crossing_the_200_leaves_the_call_up(stack: SipStack) -> None:
    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.accept(None)

    stack.on_invite(handler)
    peer = SipPeer(stack.port)
    try:
        peer.send(peer.invite("sip_x", "cross-1"))
        ok = await peer.until_status(200)
        assert status(ok) == 200
        peer.send(peer.cancel("sip_x", "cross-1"))  # sent before the 200 arrived, say
        assert status(await peer.until_status(200)) == 200
        peer.send(peer.in_dialog("ACK", ok, 1))
        peer.send(peer.in_dialog("BYE", ok, 2))
        bye = await peer.until_status(200)
        assert header(bye, "CSeq") == "2 BYE" and status(bye) == 200  # not 481: still up
        await until(lambda: empty(stack))
    finally:
        peer.close()


async def test_over_tcp_our_contact_and_via_say_tcp(stack: SipStack) -> None:
    hang_up = asyncio.Event()

    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.accept(None)
        await hang_up.wait()
        call.hangup()

    stack.on_invite(handler)
    peer = SipPeer(stack.port, transport="tcp")
    try:
        peer.send(peer.invite("sip_x", "tcp-1"))
        ok = await peer.until_status(200)
        assert ";transport=tcp" in header(ok, "Contact"), ok
        peer.send(peer.in_dialog("ACK", ok, 1))
        hang_up.set()
        bye = await peer.receive()
        assert bye.startswith("BYE ") and header(bye, "Via").startswith("SIP/2.0/TCP"), bye
        peer.send(peer.reply(bye, 200, "OK"))
        await until(lambda: empty(stack))
    finally:
        peer.close()


async def test_calls_that_ended_leave_the_tables(stack: SipStack) -> None:
    hang_ups: list[asyncio.Event] = []

    async def handler(call: IncomingCall, _account: str | None) -> None:
        user = call.invite.uri.split(":")[1].split("@")[0]
        if user == "refuse":
            call.reject(486)
            return
        call.accept(None)
        if user == "ours":  # the platform hangs up
            event = asyncio.Event()
            hang_ups.append(event)
            await event.wait()
            call.hangup()

    stack.on_invite(handler)
    peer = SipPeer(stack.port)
    try:
        for i in range(4):
            # refused, and its ACK never sent (lost)
            peer.send(peer.invite("refuse", f"r-{i}"))
            assert status(await peer.until_status(200)) == 486
            # answered, the caller hangs up
            peer.send(peer.invite("theirs", f"t-{i}"))
            ok = await peer.until_status(200)
            peer.send(peer.in_dialog("ACK", ok, 1))
            peer.send(peer.in_dialog("BYE", ok, 2))
            assert status(await peer.until_status(200)) == 200
            # answered, the platform hangs up
            peer.send(peer.invite("ours", f"o-{i}"))
            ok = await peer.until_status(200)
            peer.send(peer.in_dialog("ACK", ok, 1))
            await until(lambda n=i + 1: len(hang_ups) == n)  # type: ignore[misc]
            hang_ups[-1].set()
            bye = await peer.receive()
            assert bye.startswith("BYE ")
            peer.send(peer.reply(bye, 200, "OK"))
        await until(lambda: empty(stack))
    finally:
        peer.close()


async def test_a_caller_that_never_acks_our_200_is_gone(
    stack: SipStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiosipua's 2xx retransmission timers, short: T1 50 ms, given up after half a second
    monkeypatch.setattr(aiosipua.transaction, "T1", 0.05)
    monkeypatch.setattr(aiosipua.transaction, "TIMER_H", 0.5)
    gone: list[str] = []
    stack.on_bye(lambda call, _request: gone.append(call.call_id))

    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.accept(None)
        await until(lambda: bool(gone))

    stack.on_invite(handler)
    peer = SipPeer(stack.port)
    try:
        peer.send(peer.invite("sip_x", "no-ack-1"))
        first = await peer.until_status(200)
        again = await peer.until_status(200)  # retransmitted: no ACK came
        assert header(first, "CSeq") == header(again, "CSeq") == "1 INVITE"
        await until(lambda: gone == ["no-ack-1"])
        await until(lambda: empty(stack))
    finally:
        peer.close()


# --- REFER: SIPp as the PBX that takes the transfer ---

pbx = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) missing")


@pbx
@pytest.mark.parametrize(("sipfrag", "outcome"), [("200 OK", 200), ("486 Busy Here", 486)])
async def test_refer_reports_the_pbx_outcome_then_our_bye(
    stack: SipStack, tmp_path: Path, sipfrag: str, outcome: int
) -> None:
    got: list[int] = []

    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.accept(None)
        await until(lambda: call.dialog.state == DialogState.CONFIRMED)
        await asyncio.sleep(0.2)  # the ACK is in
        got.append(await stack.refer(call, "sip:+14155550123@127.0.0.1", 10))
        call.hangup()

    stack.on_invite(handler)
    scenario = (SIPP / "refer_pbx.xml").read_text().replace("@SIPFRAG@", sipfrag)
    (tmp_path / "refer.xml").write_text(scenario)
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(tmp_path / "refer.xml"), f"127.0.0.1:{stack.port}", "-i", "127.0.0.1",
        "-p", str(free_udp_port()), "-mp", str(free_udp_port(even=True)), "-s", "sip_x",
        "-key", "rtpport", str(free_udp_port(even=True)),
        "-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin",
        "-trace_msg", "-message_file", str(tmp_path / "pbx-messages.log"),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):
        rc = await proc.wait()
    log = (tmp_path / "pbx-messages.log").read_text(errors="replace")
    assert rc == 0, log[-3000:]
    assert got == [outcome]
    refer = log[log.index("REFER sip:") :]
    assert "Refer-To: <sip:+14155550123@127.0.0.1>" in refer
    await until(lambda: empty(stack))


async def test_an_unanswered_refer_fails(tmp_path: Path) -> None:
    stack = SipStack("127.0.0.1", 0, tcp=False, timers=SipTimers(t1=0.05, t2=0.1, timeout=0.5))
    await stack.start()
    failed: list[int] = []

    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.accept(None)
        try:
            await stack.refer(call, "sip:+14155550123@127.0.0.1", 5)
        except ReferFailed as e:
            failed.append(e.status)
        call.hangup()

    stack.on_invite(handler)
    peer = SipPeer(stack.port)
    try:
        peer.send(peer.invite("sip_x", "mute-1"))
        ok = await peer.until_status(200)
        peer.send(peer.in_dialog("ACK", ok, 1))
        refers = []
        while True:  # the REFER comes again and again, unanswered, then the BYE
            message = await peer.receive()
            if message.startswith("BYE "):
                break
            if message.startswith("REFER "):
                refers.append(message)
        assert len(refers) >= 2 and len({header(r, "CSeq") for r in refers}) == 1
        assert failed == [0]
        assert headers(refers[0], "Refer-To") == ["<sip:+14155550123@127.0.0.1>"]
    finally:
        peer.close()
        await stack.stop()


async def test_refused_invites_leave_the_tables(stack: SipStack) -> None:
    # an account whose registrar is 127.0.0.2: INVITEs from 127.0.0.1 get 403
    stack.register(AccountConfig("sip_r", "127.0.0.2", 9, "udp", "u", "p"))
    await until(lambda: (reg := stack.registration("sip_r")) is not None and bool(reg.registrar))
    stack.on_invite(lambda call, _account: None)  # never reached
    peer = SipPeer(stack.port)
    try:
        for i in range(3):  # refused, their ACKs never sent (lost)
            peer.send(peer.invite("sip_r", f"forbidden-{i}"))
            assert status(await peer.until_status(200)) == 403
        stack.on_invite(None)
        for i in range(3):
            peer.send(peer.invite("sip_r", f"nobody-{i}"))
            assert status(await peer.until_status(200)) == 480
        await until(lambda: empty(stack))
    finally:
        peer.close()


async def test_over_tcp_answers_go_back_on_the_connection_the_request_came_on(
    stack: SipStack,
) -> None:
    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.reject(486)

    stack.on_invite(handler)
    for rport in ("", ";rport"):
        peer = SipPeer(stack.port, transport="tcp")
        # a PBX whose Via names its listening port, not the connection's
        peer.via = lambda branch, r=rport: (  # type: ignore[method-assign]
            f"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK{branch}{r}"
        )
        try:
            peer.send(peer.invite("sip_x", f"tcp-via{rport}"))
            answer = await peer.until_status(200)
            assert status(answer) == 486
            assert "127.0.0.1:5070" in header(answer, "Via")
        finally:
            peer.close()


def granted(contacts: list[str], ours: str = "sip:sip_a@10.0.0.5:5060") -> int:
    """The interval our REGISTER's 200 grants our binding, its Contacts being ``contacts``."""
    register = object.__new__(_Register)
    register.contact_uri, register.expires = ours, 300
    raw = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\r\n"
        "From: <sip:1001@pbx>;tag=a\r\nTo: <sip:1001@pbx>;tag=b\r\nCall-ID: c\r\n"
        "CSeq: 2 REGISTER\r\n" + "".join(f"Contact: {c}\r\n" for c in contacts)
        + "Content-Length: 0\r\n\r\n"
    )  # fmt: skip
    response = SipMessage.parse(raw.encode())
    assert isinstance(response, SipResponse)
    return register._granted_expires(response)


def test_the_granted_interval_is_our_bindings_even_rewritten_by_a_nat() -> None:
    # ours, exactly, among others
    assert granted(["<sip:x@10.0.0.9>;expires=3600", "<sip:sip_a@10.0.0.5:5060>;expires=60"]) == 60
    # rewritten to the NAT's address: found by our user part
    assert (
        granted(["<sip:x@10.0.0.9>;expires=3600", "<sip:sip_a@198.51.100.7:61234>;expires=60"])
        == 60
    )
    # the only one listed, whatever its user
    assert granted(["<sip:1001@198.51.100.7:61234>;expires=45"]) == 45
    # none recognisable: the smallest listed
    assert granted(["<sip:x@10.0.0.9>;expires=3600", "<sip:y@10.0.0.8>;expires=90"]) == 90
    # none listed: what we asked
    assert granted([]) == 300


async def test_a_caller_bye_during_a_refer_fails_it_at_once() -> None:
    # default timers: an unanswered REFER or a missing NOTIFY would wait far longer than `until`
    stack = SipStack("127.0.0.1", 0, tcp=False)
    await stack.start()
    failed: list[str] = []

    async def handler(call: IncomingCall, _account: str | None) -> None:
        call.accept(None)
        try:
            await stack.refer(call, "sip:+14155550123@127.0.0.1", 600)
        except ReferFailed as e:
            failed.append(str(e))

    stack.on_invite(handler)
    peer = SipPeer(stack.port)
    try:
        peer.send(peer.invite("sip_x", "refer-bye-1"))
        ok = await peer.until_status(200)
        peer.send(peer.in_dialog("ACK", ok, 1))
        refer = await peer.receive()
        assert refer.startswith("REFER ")
        peer.send(peer.reply(refer, 202, "Accepted"))
        peer.send(peer.in_dialog("BYE", ok, 2))
        await until(lambda: bool(failed))
        assert failed == ["the call ended"]
        assert stack.table_sizes()["refers"] == 0
    finally:
        peer.close()
        await stack.stop()
