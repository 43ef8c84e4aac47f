"""``/v1/sip-accounts``: the tenant's SIP accounts (its PBX or SIP trunk) and their registration.

An account holds credentials: admins create, change and delete it; any key of the tenant reads
it, never its password. Every change is audited, without the password.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException

from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem
from api.schema import whole
from api.write_limits import write_limit
from integrations.egress import AllowList
from routing.directory import Directory
from routing.errors import AgentNotFound
from routing.subprocessors import NotOnRegister, Register
from telephony.sip import PBX, SipAccount, SipAccountNotFound, SipAccounts
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter

#: The shape of the ids the platform makes (telephony/sip.py).
ACCOUNT_ID = r"^sip_[0-9a-f]{16}$"
AccountId = Annotated[str, Path(pattern=ACCOUNT_ID)]
#: A host name or an IPv4 address.
HOST = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"  # noqa: E501
Host = Annotated[str, Field(pattern=HOST, max_length=253)]
Name = Annotated[str, Field(min_length=1, max_length=100)]
Provider = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,32}$", description='"pbx" or a carrier')]
Port = Annotated[StrictInt, Field(ge=1, le=65535), BeforeValidator(whole)]
#: A SIP user part: no spaces, no characters that end a URI's user.
Username = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.!~*'()&=+$,;?/%-]{1,64}$")]
Password = Annotated[str, Field(min_length=1, max_length=128, description="Write-only")]
Expires = Annotated[StrictInt, Field(ge=60, le=3600), BeforeValidator(whole)]
Absent = SkipJsonSchema[None]


class SipAccountFields(BaseModel):
    """A SIP account as the customer sets it."""

    model_config = ConfigDict(extra="ignore")
    name: Name
    provider: Provider = Field(
        description='"pbx" (your own PBX) or a carrier of the sub-processor register in force'
    )
    registrar: Host = Field(description="Host name or IPv4 address of the registrar")
    port: Port = 5060
    transport: Literal["udp", "tcp"] = "udp"
    username: Username
    password: Password
    domain: Host | None = Field(default=None, description="SIP domain (default: the registrar)")
    agent_id: str = Field(description="The agent that answers the account's calls")
    expires_s: Expires = Field(default=300, description="Registration interval asked for")


class SipAccountPatch(BaseModel):
    """Fields to change; absent ones stay. A changed account registers again."""

    model_config = ConfigDict(extra="ignore")
    name: Name | Absent = None
    provider: Provider | Absent = None
    registrar: Host | Absent = None
    port: Port | Absent = None
    transport: Literal["udp", "tcp"] | Absent = None
    username: Username | Absent = None
    password: Password | Absent = None
    domain: Host | Absent = None
    agent_id: str | Absent = None
    expires_s: Expires | Absent = None


class RegistrationOut(BaseModel):
    """Where the account's registration stands."""

    state: Literal["registering", "registered", "rejected", "unreachable", "stopped"]
    expires_at: dt.datetime | None = Field(description="Until when the registrar holds it")
    next_attempt_at: dt.datetime | None = Field(description="When it is tried again")
    last_status: int | None = Field(description="The registrar's last final SIP status")


class SipAccountOut(BaseModel):
    """A SIP account (never its password) and its registration."""

    account_id: str
    name: str
    provider: str
    registrar: str
    port: int
    transport: str
    username: str
    domain: str | None
    agent_id: str
    expires_s: int
    created_at: dt.datetime
    updated_at: dt.datetime
    registration: RegistrationOut


class SipAccountList(BaseModel):
    """The tenant's SIP accounts."""

    items: list[SipAccountOut]


def _ts(at: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(at, dt.UTC) if at is not None else None


def router(
    *,
    tenants: TenantStore,
    directory: Directory,
    audit: AuditLog,
    writes: WriteLimiter,
    accounts: SipAccounts,
    register: Register,
    allow: AllowList,
    changed: Callable[[], None] = lambda: None,
) -> APIRouter:
    """The SIP account routes; ``changed()`` is told of each write (to register at once).

    A registrar given as an address must be public unless ``allow`` permits it.
    """
    r = APIRouter(prefix="/v1/sip-accounts", tags=["sip"], responses=API_ERRORS)
    as_admin = tenant_key(tenants, Role.ADMIN)
    admin = Depends(as_admin)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    limited = write_limit(writes, as_admin)

    async def find(caller: Caller, account_id: str) -> SipAccount:
        try:
            return await accounts.get(caller.tenant_id, account_id)
        except SipAccountNotFound as e:
            raise HTTPException(404, "no such SIP account") from e

    async def check(caller: Caller, values: dict[str, Any]) -> None:
        if "agent_id" in values:
            try:
                await directory.get_agent_by_id(values["agent_id"], caller.tenant_id)
            except AgentNotFound as e:
                raise ApiProblem(
                    422, "unknown_agent", f"no agent {values['agent_id']!r} in your tenant"
                ) from e
        provider = values.get("provider")
        if provider is not None and provider != PBX:
            try:
                register.require(provider, dt.datetime.now(dt.UTC))
            except NotOnRegister as e:
                raise ApiProblem(422, e.code, f"provider: {e}") from e
        for name in ("registrar", "domain"):
            host = values.get(name)
            if host is None:
                continue
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                continue  # a name: its addresses are checked when it is registered
            if name == "registrar" and not allow.permits(host, ip):
                raise ApiProblem(
                    422, "registrar_not_public", "registrar: the address is not public"
                )

    async def out(account: SipAccount) -> SipAccountOut:
        status = await accounts.registration(account.account_id)
        return SipAccountOut(
            account_id=account.account_id,
            name=account.name,
            provider=account.provider,
            registrar=account.registrar,
            port=account.port,
            transport=account.transport,
            username=account.username,
            domain=account.domain,
            agent_id=account.agent_id,
            expires_s=account.expires_s,
            created_at=dt.datetime.fromtimestamp(account.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(account.updated_at, dt.UTC),
            registration=RegistrationOut(
                state=str(status.state),  # type: ignore[arg-type]
                expires_at=_ts(status.expires_at),
                next_attempt_at=_ts(status.next_attempt_at),
                last_status=status.last_status,
            ),
        )

    def audited(values: dict[str, Any]) -> dict[str, Any]:
        """The account's fields the audit log keeps: no password, no registrar (an address)."""
        kept = ("provider", "port", "transport", "agent_id", "expires_s")
        detail = {k: values[k] for k in kept if k in values}
        if "registrar" in values:
            detail["registrar_set"] = True
        if "password" in values:
            detail["password_changed"] = True
        return detail

    @r.post("", status_code=201, response_model=SipAccountOut, dependencies=[limited])
    async def create(body: SipAccountFields, caller: Caller = admin) -> SipAccountOut:
        """Add a SIP account; it starts registering at once."""
        values = body.model_dump(exclude={"password"})
        await check(caller, values)
        made = await accounts.create(caller.tenant_id, values, body.password)
        await audit.record(caller, "sip_account.create", made.account_id, **audited(values))
        changed()
        return await out(made)

    @r.get("", response_model=SipAccountList)
    async def list_accounts(caller: Caller = viewer) -> SipAccountList:
        """Your tenant's SIP accounts."""
        return SipAccountList(
            items=[await out(a) for a in await accounts.of_tenant(caller.tenant_id)]
        )

    @r.get("/{account_id}", response_model=SipAccountOut)
    async def read(account_id: AccountId, caller: Caller = viewer) -> SipAccountOut:
        """One of your SIP accounts and its registration."""
        return await out(await find(caller, account_id))

    @r.patch("/{account_id}", response_model=SipAccountOut, dependencies=[limited])
    async def update(
        account_id: AccountId, body: SipAccountPatch, caller: Caller = admin
    ) -> SipAccountOut:
        """Change a SIP account; it registers again with what changed."""
        await find(caller, account_id)
        values = body.model_dump(exclude_none=True)
        password = values.pop("password", None)
        await check(caller, values)
        changed_to = await accounts.update(caller.tenant_id, account_id, values, password)
        detail = audited(values | ({"password": True} if password is not None else {}))
        await audit.record(caller, "sip_account.update", account_id, **detail)
        changed()
        return await out(changed_to)

    @r.delete("/{account_id}", status_code=204, dependencies=[limited])
    async def delete(account_id: AccountId, caller: Caller = admin) -> Response:
        """Delete a SIP account; its registration stops."""
        await find(caller, account_id)
        await accounts.delete(caller.tenant_id, account_id)
        await audit.record(caller, "sip_account.delete", account_id)
        changed()
        return Response(status_code=204)

    return r
