"""``/v1/agents``: a tenant's agents (create, list, read, update, delete)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, StrictBool, StrictInt
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException

from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem
from api.schema import NOT_BLANK_PATTERN, PhoneNumber, whole
from api.write_limits import write_limit
from routing.directory import _LANGUAGES as LANGUAGES
from routing.directory import (
    DEFAULT_ANNOUNCEMENT,
    DEFAULT_GREETING,
    DEFAULT_VOICE,
    MAX_RETENTION_DAYS,
    Agent,
    Directory,
)
from routing.errors import AgentNotFound
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter
from voice.announcement import check_announcement, default_announcement
from voice.errors import AnnouncementIncomplete

Tool = Literal["end_call", "transfer"]


def _default_tools() -> list[Tool]:
    return ["end_call"]


#: A PATCH field's "absent": None in code, not in the schema (null is refused).
Absent = SkipJsonSchema[None]
#: Days a recording or transcript is kept (the bounds inside, so that a union keeps them).
RetentionDays = Annotated[StrictInt, Field(ge=1, le=MAX_RETENTION_DAYS), BeforeValidator(whole)]
#: The voices this process has installed (set by :func:`router`), for the schema's ``enum``.
_VOICES: set[str] = set()
#: The languages an agent may speak: the directory's list, as the schema's ``enum``.
_LANGUAGE = Field(
    pattern="^(" + "|".join(sorted(LANGUAGES)) + ")$",
    json_schema_extra={"enum": list[JsonValue](sorted(LANGUAGES))},
)
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _voice_enum(schema: dict[str, Any]) -> None:
    """Put the installed voices in the ``voice`` field's schema."""
    schema["enum"] = sorted(_VOICES)


#: A transfer needs a number to transfer to (the directory refuses it otherwise).
_TRANSFER_NEEDS_A_NUMBER: JsonDict = {
    "if": {"properties": {"tools": {"contains": {"const": "transfer"}}}, "required": ["tools"]},
    "then": {
        "properties": {"transfer_number": {"type": "string"}},
        "required": ["transfer_number"],
    },
}


class AgentFields(BaseModel):
    """What a customer sets on an agent (server-owned fields in a body are ignored)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_TRANSFER_NEEDS_A_NUMBER)
    name: str = Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)
    language: Annotated[str, _LANGUAGE] = "en"
    system_prompt: str = Field(min_length=1, max_length=8000, pattern=NOT_BLANK_PATTERN)
    voice: str = Field(default=DEFAULT_VOICE, json_schema_extra=_voice_enum)
    greeting: str = Field(default=DEFAULT_GREETING, max_length=500)
    announcement: str = Field(
        default=DEFAULT_ANNOUNCEMENT, min_length=1, max_length=1000, pattern=NOT_BLANK_PATTERN
    )
    recording: StrictBool = False
    store_transcripts: StrictBool = True
    retention_days: RetentionDays = MAX_RETENTION_DAYS
    transfer_number: PhoneNumber | None = None
    tools: list[Tool] = Field(default_factory=_default_tools)


#: Fields a PATCH may set to null (to clear them); null is refused for the others.
_NULLABLE = frozenset({"transfer_number", "announcement"})


class AgentPatch(BaseModel):
    """Fields to change; absent ones stay as they are (only ``transfer_number`` takes null)."""

    # None marks a field absent; null is refused (422) and left out of the schema.
    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)] | Absent = None
    language: Annotated[str, _LANGUAGE] | Absent = None
    system_prompt: (
        Annotated[str, Field(min_length=1, max_length=8000, pattern=NOT_BLANK_PATTERN)] | Absent
    ) = None
    voice: Annotated[str, Field(json_schema_extra=_voice_enum)] | Absent = None
    greeting: Annotated[str, Field(max_length=500)] | Absent = None
    announcement: (
        Annotated[str, Field(min_length=1, max_length=1000, pattern=NOT_BLANK_PATTERN)] | Absent
    ) = None
    recording: StrictBool | Absent = None
    store_transcripts: StrictBool | Absent = None
    retention_days: RetentionDays | Absent = None
    transfer_number: PhoneNumber | None = None
    tools: list[Tool] | Absent = None


class AgentOut(AgentFields):
    """An agent as stored."""

    agent_id: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, a: Agent) -> AgentOut:
        """From the directory's record."""
        return cls(
            agent_id=a.agent_id,
            name=a.name,
            language=a.language,
            system_prompt=a.prompt,
            voice=a.voice,
            greeting=a.greeting,
            announcement=a.announcement,
            recording=a.recording,
            store_transcripts=a.store_transcripts,
            retention_days=a.retention_days,
            transfer_number=a.transfer_number,
            tools=list(a.tools),  # type: ignore[arg-type]
            created_at=dt.datetime.fromtimestamp(a.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(a.updated_at, dt.UTC),
        )


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
        agent = Agent(tenant=tenant, prompt=prompt, **fields, **keep)  # type: ignore[arg-type]
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    try:  # the AI disclosure and recording notice, in the agent's language
        check_announcement(agent.announcement, agent.language)
    except AnnouncementIncomplete as e:
        raise ApiProblem(422, e.code, str(e)) from e
    return agent


def router(
    *,
    tenants: TenantStore,
    directory: Directory,
    audit: AuditLog,
    writes: WriteLimiter,
    prepare: Callable[[Agent], None],
    voices: frozenset[str],
) -> APIRouter:
    """``/v1/agents``: agents speak one of ``voices``; ``prepare(agent)`` readies its phrases."""
    r = APIRouter(prefix="/v1/agents", tags=["agents"], responses=API_ERRORS)

    as_editor = tenant_key(tenants, Role.EDITOR)
    editor = Depends(as_editor)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    # Writes make the shared cores synthesize phrases: metered per tenant (429 rate_limited).
    limited = write_limit(writes, as_editor)
    _VOICES.update(voices)

    async def find(caller: Caller, agent_id: str) -> Agent:
        try:
            return await directory.get_agent_by_id(agent_id, caller.tenant_id)
        except AgentNotFound as e:
            raise HTTPException(404, "no such agent") from e

    @r.post("", status_code=201, response_model=AgentOut, dependencies=[limited])
    async def create(body: AgentFields, caller: Caller = editor) -> AgentOut:
        """Create an agent."""
        fields = body.model_dump()
        if "announcement" not in body.model_fields_set:  # the default, in the agent's language
            fields["announcement"] = default_announcement(body.language)
        agent = _build(caller.tenant_id, fields, voices)
        await directory.add_agent(agent)
        prepare(agent)  # its announcement is ready before its first call
        await audit.record(caller, "agent.create", agent.agent_id, name=agent.name)
        return AgentOut.of(agent)

    @r.get("", response_model=AgentList)
    async def list_agents(caller: Caller = viewer) -> AgentList:
        """Your tenant's agents."""
        return AgentList(
            items=[AgentOut.of(a) for a in await directory.list_agents(caller.tenant_id)]
        )

    @r.get("/{agent_id}", response_model=AgentOut)
    async def read(agent_id: str, caller: Caller = viewer) -> AgentOut:
        """One agent."""
        return AgentOut.of(await find(caller, agent_id))

    @r.patch("/{agent_id}", response_model=AgentOut, dependencies=[limited])
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
        if (
            changes.get("language", current.language) != current.language
            and "announcement" not in changes
            and current.announcement == default_announcement(current.language)
        ):  # a default announcement follows the language
            changes["announcement"] = default_announcement(changes["language"])
        merged = AgentOut.of(current).model_dump() | changes
        if "transfer" in merged["tools"] and not merged["transfer_number"]:  # stored + changed
            raise ApiProblem(
                422, "transfer_number_missing", "the transfer tool needs a transfer_number"
            )
        fields = {k: merged[k] for k in AgentFields.model_fields}
        kept = {"agent_id": current.agent_id, "created_at": current.created_at}
        agent = _build(caller.tenant_id, fields, voices, **kept, updated_at=time.time())
        await directory.update_agent(agent, current.name)
        prepare(agent)
        await audit.record(caller, "agent.update", agent.agent_id, fields=sorted(changes))
        return AgentOut.of(agent)

    @r.delete("/{agent_id}", status_code=204, dependencies=[limited])
    async def delete(agent_id: str, caller: Caller = editor) -> Response:
        """Delete an agent that answers no number (409 otherwise)."""
        agent = await find(caller, agent_id)
        await directory.delete_agent(agent)
        await audit.record(caller, "agent.delete", agent.agent_id, name=agent.name)
        return Response(status_code=204)

    return r


__all__ = ["router"]
