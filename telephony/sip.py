"""SIP accounts (a tenant's PBX or SIP trunk) and the service that keeps them registered.

An account's password is sealed under the tenant's key and opened only to register. Each account
is registered by one process of the platform at a time: the holder of the lease
``sip:{account_id}``; that process writes the account's registration state for the API to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from redis.asyncio import Redis

from carriers.sip.stack import AccountConfig, RegState, RegStatus, SipStack
from integrations.sealed import Sealer
from store import keys

log = logging.getLogger(__name__)

_PASSWORD = "sip-password"
#: The providers that are not a sub-processor: the customer's own PBX.
PBX = "pbx"
TRANSPORTS = ("udp", "tcp")


class Lease(Protocol):
    """A job one process runs at a time (cluster/lease.py's :class:`~cluster.lease.Lease`)."""

    async def acquire(self) -> bool:
        """Take or renew it; ``False`` when another process holds it."""
        ...

    async def release(self) -> None:
        """Give it back."""
        ...


class SipAccountNotFound(LookupError):
    """No such SIP account in the tenant."""


def new_account_id() -> str:
    """A fresh account id (also the user part of the Contact it registers)."""
    return "sip_" + secrets.token_hex(8)


@dataclass(frozen=True)
class SipAccount:
    """A tenant's SIP account (never its password)."""

    account_id: str
    tenant: str
    name: str
    provider: str
    registrar: str
    port: int
    transport: str
    username: str
    domain: str | None
    agent_id: str
    expires_s: int
    created_at: float
    updated_at: float

    def config(self, password: str) -> AccountConfig:
        """What the stack needs to register it."""
        return AccountConfig(
            self.account_id,
            self.registrar,
            self.port,
            self.transport,
            self.username,
            password,
            self.domain,
            self.expires_s,
        )


#: The fields a customer sets (besides the password).
EDITABLE = tuple(
    f.name
    for f in fields(SipAccount)
    if f.name not in ("account_id", "tenant", "created_at", "updated_at")
)


def _status(raw: dict[str, str]) -> RegStatus:
    def opt(name: str) -> float | None:
        return float(raw[name]) if raw.get(name) else None

    return RegStatus(
        RegState(raw.get("state") or RegState.STOPPED),
        expires_at=opt("expires_at"),
        next_attempt_at=opt("next_attempt_at"),
        last_status=int(raw["last_status"]) if raw.get("last_status") else None,
    )


class SipAccounts:
    """Reads and writes the tenants' SIP accounts and their registration states."""

    def __init__(self, redis: Redis, sealer: Sealer) -> None:
        """Store in ``redis``; passwords sealed by ``sealer``."""
        self.redis = redis
        self.sealer = sealer

    async def create(self, tenant: str, values: dict[str, Any], password: str) -> SipAccount:
        """A new account with ``values`` (every field of :data:`EDITABLE`)."""
        account_id, now = new_account_id(), time.time()
        sealed = await self.sealer.seal(tenant, account_id, _PASSWORD, password.encode())
        record = {
            "account_id": account_id,
            "tenant": tenant,
            **{k: _text(values.get(k)) for k in EDITABLE},
            "password": sealed,
            "created_at": str(now),
            "updated_at": str(now),
        }
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.sip_account(tenant, account_id), mapping=keys.fields(record))
            p.sadd(keys.sip_accounts(tenant), account_id)
            p.hset(keys.sip_accounts_all(), account_id, tenant)
            await p.execute()
        return await self.get(tenant, account_id)

    async def get(self, tenant: str, account_id: str) -> SipAccount:
        """The tenant's account; :class:`SipAccountNotFound` (another tenant's too)."""
        raw = keys.strs(await self.redis.hgetall(keys.sip_account(tenant, account_id)))
        if not raw or raw.get("tenant") != tenant:
            raise SipAccountNotFound(f"no SIP account {account_id!r}")
        return SipAccount(
            account_id=account_id,
            tenant=tenant,
            name=raw["name"],
            provider=raw["provider"],
            registrar=raw["registrar"],
            port=int(raw["port"]),
            transport=raw["transport"],
            username=raw["username"],
            domain=raw.get("domain") or None,
            agent_id=raw["agent_id"],
            expires_s=int(raw["expires_s"]),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
        )

    async def of_tenant(self, tenant: str) -> list[SipAccount]:
        """The tenant's accounts, oldest first."""
        out = []
        for account_id in sorted(map(str, await self.redis.smembers(keys.sip_accounts(tenant)))):
            with contextlib.suppress(SipAccountNotFound):
                out.append(await self.get(tenant, account_id))
        return sorted(out, key=lambda a: a.created_at)

    async def everything(self) -> list[SipAccount]:
        """Every account of every tenant."""
        out = []
        for account_id, tenant in keys.strs(
            await self.redis.hgetall(keys.sip_accounts_all())
        ).items():
            with contextlib.suppress(SipAccountNotFound):
                out.append(await self.get(tenant, account_id))
        return out

    async def update(
        self, tenant: str, account_id: str, values: dict[str, Any], password: str | None
    ) -> SipAccount:
        """Change the fields in ``values`` (and the password when given)."""
        await self.get(tenant, account_id)
        record = {k: _text(v) for k, v in values.items() if k in EDITABLE}
        record["updated_at"] = str(time.time())
        if password is not None:
            record["password"] = await self.sealer.seal(
                tenant, account_id, _PASSWORD, password.encode()
            )
        await self.redis.hset(keys.sip_account(tenant, account_id), mapping=keys.fields(record))
        return await self.get(tenant, account_id)

    async def delete(self, tenant: str, account_id: str) -> None:
        """Remove an account (its registration stops at the next look of its process)."""
        await self.get(tenant, account_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.sip_account(tenant, account_id), keys.sip_registration(account_id))
            p.srem(keys.sip_accounts(tenant), account_id)
            p.hdel(keys.sip_accounts_all(), account_id)
            await p.execute()

    async def forget_tenant(self, tenant: str) -> None:
        """Delete every account of the tenant (offboarding)."""
        ids = [str(i) for i in await self.redis.smembers(keys.sip_accounts(tenant))]
        doomed = [keys.sip_account(tenant, i) for i in ids]
        doomed += [keys.sip_registration(i) for i in ids]
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.sip_accounts(tenant), *doomed)
            if ids:
                p.hdel(keys.sip_accounts_all(), *ids)
            await p.execute()

    async def route_of(self, account_id: str) -> tuple[str, str] | None:
        """The tenant and agent id of an account (``None``: no such account)."""
        tenant = await self.redis.hget(keys.sip_accounts_all(), account_id)
        if not tenant:
            return None
        try:
            account = await self.get(str(tenant), account_id)
        except SipAccountNotFound:
            return None
        return account.tenant, account.agent_id

    async def password(self, account: SipAccount) -> str:
        """The account's password in clear, to register."""
        sealed = await self.redis.hget(
            keys.sip_account(account.tenant, account.account_id), "password"
        )
        if not sealed:
            raise SipAccountNotFound(f"no SIP account {account.account_id!r}")
        opened = await self.sealer.open(account.tenant, account.account_id, _PASSWORD, str(sealed))
        return opened.decode()

    async def registration(self, account_id: str) -> RegStatus:
        """The account's registration as its process last wrote it (stopped: none runs it)."""
        return _status(keys.strs(await self.redis.hgetall(keys.sip_registration(account_id))))

    async def set_registration(self, account_id: str, status: RegStatus) -> None:
        """Write the account's registration state (nothing once the account is deleted)."""
        if not await self.redis.hexists(keys.sip_accounts_all(), account_id):
            return
        record = {
            "state": str(status.state),
            "expires_at": _text(status.expires_at),
            "next_attempt_at": _text(status.next_attempt_at),
            "last_status": _text(status.last_status),
        }
        await self.redis.hset(keys.sip_registration(account_id), mapping=keys.fields(record))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class SipRegistrations:
    """Registers, in this process, every account whose lease it holds; follows their changes.

    Each pass (every ``poll_s``, or at once after :meth:`poke`) compares the accounts with what
    runs here: new or changed accounts are (re)registered, deleted ones and those whose lease
    another process took are stopped. Once :meth:`drain` is called, every account is stopped
    and its lease given back, and none is taken again.
    """

    def __init__(
        self,
        accounts: SipAccounts,
        stack: SipStack,
        lease: Callable[[str], Lease],
        *,
        poll_s: float = 5.0,
    ) -> None:
        """Register through ``stack``; ``lease(name)`` makes a lease renewed every ``poll_s``."""
        self.accounts = accounts
        self.stack = stack
        self.lease = lease
        self.poll_s = poll_s
        self._running: dict[str, float] = {}
        self._leases: dict[str, Lease] = {}
        self._wake = asyncio.Event()
        self._draining = False
        self._writes: asyncio.Queue[tuple[str, RegStatus]] = asyncio.Queue()
        stack.on_state(self._state_changed)

    def poke(self) -> None:
        """Look at the accounts now (one was created, changed or deleted here)."""
        self._wake.set()

    def drain(self) -> None:
        """Stop registering here (the process drains): unREGISTER and give the leases back now.

        The stack keeps answering the in-dialog requests of the calls still running.
        """
        self._draining = True
        self._wake.set()

    def counts(self) -> dict[str, int]:
        """How many accounts this process registers, per registration state."""
        out = {str(s): 0 for s in RegState if s != RegState.STOPPED}
        for status in self.stack.states().values():
            if status.state != RegState.STOPPED:
                out[str(status.state)] += 1
        return out

    async def run(self) -> None:
        """Follow the accounts until cancelled; then stop them and give their leases back."""
        writer = asyncio.get_running_loop().create_task(self._write_states())
        try:
            while True:
                try:
                    await self.reconcile()
                except Exception as e:  # Redis away: the next pass tries again
                    log.warning("SIP accounts not reconciled", extra={"error": type(e).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                self._wake.clear()
        finally:
            for account_id in list(self._running):
                await self._stop(account_id)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def reconcile(self) -> None:
        """One pass: start, restart and stop registrations to match the accounts.

        Draining: stop them all and give back every lease.
        """
        if self._draining:
            for account_id in list(self._running):
                await self._stop(account_id)
            for taken in list(self._leases.values()):  # taken, not registered yet
                with contextlib.suppress(Exception):
                    await taken.release()
            self._leases.clear()
            return
        wanted = {a.account_id: a for a in await self.accounts.everything()}
        for account_id in list(self._running):
            if account_id not in wanted:
                await self._stop(account_id)
        for account_id, account in wanted.items():
            lease = self._leases.get(account_id)
            if lease is None:
                lease = self.lease(f"sip:{account_id}")
                self._leases[account_id] = lease
            if not await lease.acquire():
                if account_id in self._running:  # another process took it over
                    await self._stop(account_id, release=False)
                self._leases.pop(account_id, None)
                continue
            if self._running.get(account_id) != account.updated_at:
                password = await self.accounts.password(account)
                self.stack.register(account.config(password))
                self._running[account_id] = account.updated_at
                log.info("SIP account registering", extra={"account_id": account_id})

    async def _stop(self, account_id: str, release: bool = True) -> None:
        self._running.pop(account_id, None)
        await self.stack.unregister(account_id)
        lease = self._leases.pop(account_id, None)
        if lease is not None and release:
            with contextlib.suppress(Exception):  # Redis away: the lease and state lapse
                await self.accounts.set_registration(account_id, RegStatus(RegState.STOPPED))
                await lease.release()

    def _state_changed(self, account_id: str, status: RegStatus) -> None:
        if status.state == RegState.STOPPED:
            return  # a stopped registration's state is the next holder's to write
        self._writes.put_nowait((account_id, status))
        if status.state == RegState.REJECTED:
            log.warning("SIP account rejected by its registrar", extra={"account_id": account_id})
        elif status.state == RegState.UNREACHABLE:
            log.warning("SIP registrar unreachable", extra={"account_id": account_id})

    async def _write_states(self) -> None:
        while True:
            account_id, status = await self._writes.get()
            try:
                await self.accounts.set_registration(account_id, status)
            except Exception as e:  # the next change writes again
                log.warning("SIP state not written", extra={"error": type(e).__name__})
