"""``/v1/numbers``: search through the router, provision, list, attach an agent, release."""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem
from api.schema import PHONE_PATTERN, PhoneNumber
from api.write_limits import write_limit
from routing.directory import Agent, Directory, normalise_number
from routing.errors import AgentNotFound
from telephony.service import Telephony
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter

#: A number in a path (its route's ``{number:e164}`` matches only these).
NumberPath = Annotated[str, Path(pattern=PHONE_PATTERN, description="E.164, e.g. +33185001234")]
#: Countries with telephone numbers (ISO 3166-1 alpha-2, upper case).
COUNTRIES = sorted(phonenumbers.SUPPORTED_REGIONS)


class RoutingOut(BaseModel):
    """Why this carrier: the router's decision."""

    carrier: str
    region: str
    country: str
    reason: str


class AvailableOut(BaseModel):
    """A number for rent."""

    number: str
    country: str
    locality: str


class SearchOut(BaseModel):
    """Numbers for rent and the routing decision that chose their carrier."""

    routing: RoutingOut
    items: list[AvailableOut]


class NumberCreate(BaseModel):
    """Rent ``number`` and point it at ``agent_id``."""

    model_config = ConfigDict(extra="ignore")
    number: PhoneNumber
    agent_id: str


class NumberPatch(BaseModel):
    """Point the number at another agent."""

    model_config = ConfigDict(extra="ignore")
    agent_id: str


class NumberOut(BaseModel):
    """One of the tenant's numbers."""

    number: str
    agent_id: str
    carrier: str | None
    routing: RoutingOut | None


class NumberList(BaseModel):
    """The tenant's numbers."""

    items: list[NumberOut]


def router(
    *,
    tenants: TenantStore,
    directory: Directory,
    audit: AuditLog,
    writes: WriteLimiter,
    telephony: Telephony,
) -> APIRouter:
    """``/v1/numbers``: carriers reached through ``telephony``; each write metered by ``writes``."""
    r = APIRouter(prefix="/v1/numbers", tags=["numbers"], responses=API_ERRORS)

    as_editor = tenant_key(tenants, Role.EDITOR)
    editor = Depends(as_editor)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    limited = write_limit(writes, as_editor)

    async def agent_of(caller: Caller, agent_id: str) -> Agent:
        try:
            return await directory.get_agent_by_id(agent_id, caller.tenant_id)
        except AgentNotFound as e:
            raise ApiProblem(422, "unknown_agent", f"no agent {agent_id!r} in your tenant") from e

    async def number_out(caller: Caller, raw: str) -> NumberOut:
        e164 = normalise_number(raw)
        fields = await directory.number_fields(e164)
        if not fields or fields.get("tenant") != caller.tenant_id:
            raise HTTPException(404, "no such number")
        routing = {k[8:]: v for k, v in fields.items() if k.startswith("routing_")}
        return NumberOut(
            number=e164,
            agent_id=fields["agent"],
            carrier=fields.get("carrier") or None,
            routing=RoutingOut(**routing) if routing else None,
        )

    @r.get("/available", response_model=SearchOut)
    async def search(
        caller: Caller = viewer,
        country: str = Query(
            description="ISO 3166-1 alpha-2", json_schema_extra={"enum": COUNTRIES}
        ),
        area_code: str | None = Query(default=None, max_length=8, pattern=r"^\d+$"),
        contains: str | None = Query(default=None, max_length=15, pattern=r"^\d+$"),
    ) -> SearchOut:
        """Numbers for rent, from the carrier the routing policy picks for ``country``."""
        if country not in phonenumbers.SUPPORTED_REGIONS:
            raise ApiProblem(422, "unknown_country", f"{country!r} is not a country with numbers")
        decision, found = await telephony.search(country, area_code, contains)
        return SearchOut(
            routing=RoutingOut(**decision.as_metadata()),
            items=[
                AvailableOut(number=n.number, country=n.country, locality=n.locality) for n in found
            ],
        )

    @r.post("", status_code=201, response_model=NumberOut, dependencies=[limited])
    async def provision(body: NumberCreate, caller: Caller = editor) -> NumberOut:
        """Rent a number through the carrier the router picks; 422 with the reason if refused."""
        agent = await agent_of(caller, body.agent_id)
        decision, rented, route = await telephony.rent(body.number, agent)
        await audit.record(caller, "number.provision", route.number, **decision.as_metadata())
        return await number_out(caller, route.number)

    @r.get("", response_model=NumberList)
    async def list_numbers(caller: Caller = viewer) -> NumberList:
        """Your tenant's numbers."""
        numbers = [n for n, _ in await directory.list_numbers(caller.tenant_id)]
        return NumberList(items=[await number_out(caller, n) for n in numbers])

    @r.get("/{number:e164}", response_model=NumberOut)
    async def read(number: NumberPath, caller: Caller = viewer) -> NumberOut:
        """One of your numbers."""
        return await number_out(caller, number)

    @r.patch("/{number:e164}", response_model=NumberOut, dependencies=[limited])
    async def attach(number: NumberPath, body: NumberPatch, caller: Caller = editor) -> NumberOut:
        """Point one of your numbers at another of your agents."""
        current = await number_out(caller, number)
        agent = await agent_of(caller, body.agent_id)
        await directory.attach(current.number, agent, reassign=True)
        await audit.record(caller, "number.attach", current.number, agent_id=agent.agent_id)
        return await number_out(caller, current.number)

    @r.delete("/{number:e164}", status_code=204, dependencies=[limited])
    async def release(number: NumberPath, caller: Caller = editor) -> Response:
        """Release one of your numbers (given back to its carrier if rented through us)."""
        current = await number_out(caller, number)
        await telephony.release(current.number, caller.tenant_id)
        await audit.record(caller, "number.release", current.number)
        return Response(status_code=204)

    return r
