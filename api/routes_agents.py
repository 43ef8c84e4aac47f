"""``/v1/agents``: a tenant's agents (create, list, read, update, delete)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.exceptions import HTTPException

from api.auth import Caller, tenant_key
from api.platform import Platform
from api.problems import API_ERRORS
from api.tenants import Role
from routing.directory import (
    DEFAULT_ANNOUNCEMENT,
    DEFAULT_GREETING,
    DEFAULT_VOICE,
    MAX_RETENTION_DAYS,
    Agent,
)
from routing.errors import AgentNotFound

Tool = Literal["end_call", "transfer"]


def _default_tools() -> list[Tool]:
    return ["end_call"]


class AgentFields(BaseModel):
    """What a customer sets on an agent (server-owned fields in a body are ignored)."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    language: str = Field(default="en", min_length=2, max_length=2)
    system_prompt: str = Field(min_length=1, max_length=8000)
    voice: str = DEFAULT_VOICE
    greeting: str = Field(default=DEFAULT_GREETING, max_length=500)
    announcement: str = Field(default=DEFAULT_ANNOUNCEMENT, min_length=1, max_length=1000)
    recording: StrictBool = False
    store_transcripts: StrictBool = True
    retention_days: StrictInt = Field(default=MAX_RETENTION_DAYS, ge=1, le=MAX_RETENTION_DAYS)
    transfer_number: str | None = None
    tools: list[Tool] = Field(default_factory=_default_tools)


#: Fields a PATCH may set to null (to clear them); null is refused for the others.
_NULLABLE = frozenset({"transfer_number", "announcement"})


class AgentPatch(BaseModel):
    """Fields to change; absent ones stay as they are."""

    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    language: str | None = Field(default=None, min_length=2, max_length=2)
    system_prompt: str | None = Field(default=None, min_length=1, max_length=8000)
    voice: str | None = None
    greeting: str | None = Field(default=None, max_length=500)
    announcement: str | None = Field(default=None, max_length=1000)
    recording: StrictBool | None = None
    store_transcripts: StrictBool | None = None
    retention_days: StrictInt | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS)
    transfer_number: str | None = None
    tools: list[Tool] | None = None


class AgentOut(AgentFields):
    """An agent as stored."""

    agent_id: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, a: Agent) -> AgentOut:
        """From the directory's record."""
        return cls(
            agent_id=a.agent_id, name=a.name, language=a.language, system_prompt=a.prompt,
            voice=a.voice, greeting=a.greeting, announcement=a.announcement,
            recording=a.recording, store_transcripts=a.store_transcripts,
            retention_days=a.retention_days, transfer_number=a.transfer_number,
            tools=list(a.tools),  # type: ignore[arg-type]
            created_at=dt.datetime.fromtimestamp(a.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(a.updated_at, dt.UTC),
        )  # fmt: skip


class AgentList(BaseModel):
    """The tenant's agents, by name."""

    items: list[AgentOut]


def _build(tenant: str, fields: dict[str, object], voices: frozenset[str], **keep: object) -> Agent:
    """A validated Agent, or a 422 with the reason."""
    if fields["voice"] not in voices:
        raise HTTPException(422, f"unknown voice {fields['voice']!r}; available: {sorted(voices)}")
    prompt = fields.pop("system_prompt")
    fields["tools"] = tuple(fields["tools"])  # type: ignore[arg-type]
    try:
        return Agent(tenant=tenant, prompt=prompt, **fields, **keep)  # type: ignore[arg-type]
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


def router(platform: Platform) -> APIRouter:
    """Routes bound to ``platform``."""
    r = APIRouter(prefix="/v1/agents", tags=["agents"], responses=API_ERRORS)

    editor = Depends(tenant_key(platform.tenants, Role.EDITOR))
    viewer = Depends(tenant_key(platform.tenants, Role.VIEWER))
    voices = frozenset({platform.engines.voice_name})

    async def find(caller: Caller, agent_id: str) -> Agent:
        try:
            return await platform.directory.get_agent_by_id(agent_id, caller.tenant_id)
        except AgentNotFound as e:
            raise HTTPException(404, "no such agent") from e

    @r.post("", status_code=201, response_model=AgentOut)
    async def create(body: AgentFields, caller: Caller = editor) -> AgentOut:
        """Create an agent."""
        agent = _build(caller.tenant_id, body.model_dump(), voices)
        await platform.directory.add_agent(agent)
        platform.prepare(agent)  # its announcement is ready before its first call
        await platform.audit.record(caller, "agent.create", agent.agent_id, name=agent.name)
        return AgentOut.of(agent)

    @r.get("", response_model=AgentList)
    async def list_agents(caller: Caller = viewer) -> AgentList:
        """Your tenant's agents."""
        return AgentList(
            items=[AgentOut.of(a) for a in await platform.directory.list_agents(caller.tenant_id)]
        )

    @r.get("/{agent_id}", response_model=AgentOut)
    async def read(agent_id: str, caller: Caller = viewer) -> AgentOut:
        """One agent."""
        return AgentOut.of(await find(caller, agent_id))

    @r.patch("/{agent_id}", response_model=AgentOut)
    async def update(agent_id: str, body: AgentPatch, caller: Caller = editor) -> AgentOut:
        """Change some fields of an agent."""
        current = await find(caller, agent_id)
        changes = body.model_dump(exclude_unset=True)
        nulls = sorted(k for k, v in changes.items() if v is None and k not in _NULLABLE)
        if nulls:
            raise HTTPException(422, f"these fields cannot be null: {', '.join(nulls)}")
        if "announcement" in changes and not (changes["announcement"] or "").strip():
            raise HTTPException(
                422, "the announcement (AI disclosure and recording notice) cannot be emptied"
            )
        merged = AgentOut.of(current).model_dump() | changes
        fields = {k: merged[k] for k in AgentFields.model_fields}
        agent = _build(caller.tenant_id, fields, voices, agent_id=current.agent_id,
                       created_at=current.created_at, updated_at=time.time())  # fmt: skip
        await platform.directory.update_agent(agent, current.name)
        platform.prepare(agent)
        await platform.audit.record(caller, "agent.update", agent.agent_id, fields=sorted(changes))
        return AgentOut.of(agent)

    @r.delete("/{agent_id}", status_code=204)
    async def delete(agent_id: str, caller: Caller = editor) -> Response:
        """Delete an agent that answers no number (409 otherwise)."""
        agent = await find(caller, agent_id)
        await platform.directory.delete_agent(agent)
        await platform.audit.record(caller, "agent.delete", agent.agent_id, name=agent.name)
        return Response(status_code=204)

    return r


__all__ = ["router"]
