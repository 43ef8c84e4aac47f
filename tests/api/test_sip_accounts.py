"""``/v1/sip-accounts`` on the running platform, registering at SIPp (the registrar) on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from store import keys
from tests import privacy
from tests.conftest import LiveServer
from tests.helpers import auth, seed
from tests.sip_helpers import REGISTRAR_PASSWORD as PASSWORD
from tests.sip_helpers import REGISTRAR_USERNAME as USERNAME
from tests.sip_helpers import free_udp_port, registrar

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) missing")
WRONG = "sip-pw-not-this-one-77"
privacy.SEEN.secrets.update({PASSWORD, WRONG})


def fields(agent_id: str, port: int, **over: Any) -> dict[str, Any]:
    return {
        "name": "office PBX",
        "provider": "pbx",
        "registrar": "127.0.0.1",
        "port": port,
        "username": USERNAME,
        "password": PASSWORD,
        "agent_id": agent_id,
        "expires_s": 120,
    } | over


async def registration_until(
    c: httpx.AsyncClient, account_id: str, key: str, state: str, within: float = 20.0
) -> dict[str, Any]:
    """The account's ``registration`` once its state is ``state`` (polled)."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=within)
    last: dict[str, Any] = {}
    while dt.datetime.now(dt.UTC) < deadline:
        r = await c.get(f"/v1/sip-accounts/{account_id}", headers=auth(key))
        assert r.status_code == 200, r.text
        last = r.json()["registration"]
        if last["state"] == state:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"registration stayed {last}")


async def test_account_registers_at_the_registrar_and_never_shows_its_password(
    live_server: LiveServer, live_redis: Redis, tmp_path: Path
) -> None:
    a = await seed(live_server, live_redis, "A", "+15555550811")
    async with registrar(tmp_path) as sipp, httpx.AsyncClient(base_url=live_server.url) as c:
        made = await c.post(
            "/v1/sip-accounts", json=fields(a["agent_id"], sipp.port), headers=auth(a["admin"])
        )
        assert made.status_code == 201, made.text
        account = made.json()
        assert PASSWORD not in made.text and "password" not in account
        account_id = account["account_id"]
        reg = await registration_until(c, account_id, a["viewer"], "registered")
        assert reg["last_status"] == 200
        assert dt.datetime.fromisoformat(reg["expires_at"]) > dt.datetime.now(dt.UTC)
        listed = await c.get("/v1/sip-accounts", headers=auth(a["viewer"]))
        assert [x["account_id"] for x in listed.json()["items"]] == [account_id]
        assert PASSWORD not in listed.text
        ready = (await c.get("/readyz")).json()
        assert ready["sip_accounts"]["registered"] >= 1 and account_id not in str(ready)

        # A wrong password: refused after the challenge, not retried in a loop.
        patched = await c.patch(
            f"/v1/sip-accounts/{account_id}", json={"password": WRONG}, headers=auth(a["admin"])
        )
        assert patched.status_code == 200 and WRONG not in patched.text
        reg = await registration_until(c, account_id, a["viewer"], "rejected")
        assert reg["last_status"] == 403
        assert dt.datetime.fromisoformat(reg["next_attempt_at"]) > dt.datetime.now(
            dt.UTC
        ) + dt.timedelta(minutes=10)
        assert (await c.get("/readyz")).status_code == 200
        # Changing the account (the right password again) registers it at once.
        fixed = await c.patch(
            f"/v1/sip-accounts/{account_id}", json={"password": PASSWORD}, headers=auth(a["admin"])
        )
        assert fixed.status_code == 200
        await registration_until(c, account_id, a["viewer"], "registered")

        gone = await c.delete(f"/v1/sip-accounts/{account_id}", headers=auth(a["admin"]))
        assert gone.status_code == 204
        again = await c.get(f"/v1/sip-accounts/{account_id}", headers=auth(a["viewer"]))
        assert again.status_code == 404
        log = (await c.get("/v1/audit", headers=auth(a["admin"]))).json()["items"]
    actions = [e["action"] for e in log if e["target"] == account_id]
    assert actions == ["sip_account.create"] + ["sip_account.update"] * 2 + ["sip_account.delete"]
    stored = str(await live_redis.xrange(keys.audit(a["tenant_id"])))
    assert "password_changed" in stored and "registrar_set" in stored
    assert PASSWORD not in stored and WRONG not in stored
    assert "127.0.0.1" not in stored  # the registrar's address is not kept


async def test_unreachable_registrar_backs_off_while_others_register(
    live_server: LiveServer, live_redis: Redis, tmp_path: Path
) -> None:
    a = await seed(live_server, live_redis, "A", "+15555550812")
    closed = free_udp_port()
    async with registrar(tmp_path) as sipp, httpx.AsyncClient(base_url=live_server.url) as c:
        h = auth(a["admin"])
        dead = await c.post("/v1/sip-accounts", json=fields(a["agent_id"], closed), headers=h)
        live = await c.post(
            "/v1/sip-accounts", json=fields(a["agent_id"], sipp.port, name="trunk"), headers=h
        )
        assert dead.status_code == 201 and live.status_code == 201
        down = await registration_until(c, dead.json()["account_id"], a["viewer"], "unreachable")
        assert dt.datetime.fromisoformat(down["next_attempt_at"]) > dt.datetime.now(dt.UTC)
        await registration_until(c, live.json()["account_id"], a["viewer"], "registered")
        # Datagrams that are not SIP, at the platform's SIP port: dropped, nothing else.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"INVITE garbage\r\n\r\n", b"\x00\xff" * 600, b"SIP/2.0 200\r\n\r\n"):
                s.sendto(junk, ("127.0.0.1", live_server.sip_port))
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        counts = ready.json()["sip_accounts"]
        assert counts["unreachable"] >= 1 and counts["registered"] >= 1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"agent_id": "agt_0123456789abcdef"}, "unknown_agent"),
        ({"provider": "acme-voip"}, "subprocessor_not_in_force"),
        ({"registrar": "10.1.2.3"}, "registrar_not_public"),
        ({"expires_s": 30}, None),
        ({"expires_s": 7200}, None),
        ({"transport": "tls"}, None),
        ({"port": 0}, None),
        ({"username": "has space"}, None),
        ({"registrar": "not a host"}, None),
        ({"password": ""}, None),
    ],
)
async def test_bad_accounts_are_422_problems(
    live_server: LiveServer, live_redis: Redis, change: dict[str, Any], code: str | None
) -> None:
    a = await seed(live_server, live_redis, "A", "+15555550813")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post(
            "/v1/sip-accounts",
            json=fields(a["agent_id"], free_udp_port()) | change,
            headers=auth(a["admin"]),
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        if code is not None:
            assert r.json()["code"] == code
        assert PASSWORD not in r.text
        missing = {k: v for k, v in fields(a["agent_id"], 5060).items() if k != "password"}
        r = await c.post("/v1/sip-accounts", json=missing, headers=auth(a["admin"]))
        assert r.status_code == 422
        assert (await c.get("/v1/sip-accounts", headers=auth(a["viewer"]))).json()["items"] == []
