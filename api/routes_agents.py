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
from api.schema import NOT_BLANK_PATTERN, URL_PATTERN, PhoneNumber, whole
from api.write_limits import write_limit
from integrations.egress import Egress
from integrations.errors import EgressRefused
from integrations.secrets import ToolSecrets
from routing.directory import _LANGUAGES as LANGUAGES
from routing.directory import (
    AUTO_LANGUAGE,
    DEFAULT_ANNOUNCEMENT,
    DEFAULT_GREETING,
    MAX_HTTP_TOOLS,
    MAX_RETENTION_DAYS,
    RESERVED_TOOL_NAMES,
    TOOL_TIMEOUT_RANGE_S,
    Agent,
    DigitCollection,
    Directory,
    HttpTool,
)
from routing.errors import AgentNotFound
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter
from voice.announcement import check_announcement, default_announcement, is_default
from voice.errors import AnnouncementIncomplete
from voice.phrasebook import base_language
from voice.prompt import default_greeting, default_greetings
from voice.voices import Voices

Tool = Literal["end_call", "transfer"]


def _default_tools() -> list[Tool]:
    return ["end_call"]


#: A PATCH field's "absent": None in code, not in the schema (null is refused).
Absent = SkipJsonSchema[None]
#: Days a recording or transcript is kept (the bounds inside, so that a union keeps them).
RetentionDays = Annotated[StrictInt, Field(ge=1, le=MAX_RETENTION_DAYS), BeforeValidator(whole)]
#: The voices this process has installed (set by :func:`router`), for the schema's ``enum``.
_VOICES: set[str] = set()
#: The languages an agent may speak: the directory's list, as the schema's ``enum``, and
#: ``auto`` (each call takes the caller's language, detected on their first words).
_LANGUAGE = Field(
    pattern="^(" + "|".join([*sorted(LANGUAGES), AUTO_LANGUAGE]) + ")$",
    json_schema_extra={"enum": list[JsonValue]([*sorted(LANGUAGES), AUTO_LANGUAGE])},
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


#: A JSON schema of an object (the checks no JSON schema can state are business rules).
_OBJECT_SCHEMA: JsonDict = {"properties": {"type": {"const": "object"}}, "required": ["type"]}


def _empty_parameters() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


class HttpToolFields(BaseModel):
    """A tool the model may call: the platform sends its arguments to ``url``, signed."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    description: str = Field(min_length=1, max_length=1024, pattern=NOT_BLANK_PATTERN)
    url: str = Field(
        min_length=10,
        max_length=2048,
        pattern=URL_PATTERN,
        description="The customer's endpoint (https outside development)",
    )
    method: Literal["POST", "PUT", "PATCH"] = Field(
        default="POST", description="The arguments always go in the signed JSON body"
    )
    parameters: dict[str, JsonValue] = Field(
        default_factory=_empty_parameters,
        json_schema_extra=_OBJECT_SCHEMA,
        description="JSON schema (type object) of the arguments, sent as a JSON body",
    )
    timeout_s: float = Field(default=5.0, ge=TOOL_TIMEOUT_RANGE_S[0], le=TOOL_TIMEOUT_RANGE_S[1])


class DigitFields(BaseModel):
    """How the caller's keypad digits are gathered into one input for the model."""

    model_config = ConfigDict(extra="ignore")
    max_digits: Annotated[StrictInt, Field(ge=1, le=32), BeforeValidator(whole)] = 10
    terminator: Literal["#", "*", ""] = "#"
    timeout_s: float = Field(default=5.0, ge=1.0, le=30.0)


class AgentFields(BaseModel):
    """What a customer sets on an agent (server-owned fields in a body are ignored)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_TRANSFER_NEEDS_A_NUMBER)
    name: str = Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)
    language: Annotated[str, _LANGUAGE] = "en"
    system_prompt: str = Field(min_length=1, max_length=8000, pattern=NOT_BLANK_PATTERN)
    voice: Annotated[str, Field(json_schema_extra=_voice_enum)] | Absent = Field(
        default=None,
        description="An installed voice of the agent's language; by default, that language's "
        "default voice",
    )
    greeting: str = Field(default=DEFAULT_GREETING, max_length=500)
    announcement: str = Field(
        default=DEFAULT_ANNOUNCEMENT, min_length=1, max_length=1000, pattern=NOT_BLANK_PATTERN
    )
    recording: StrictBool = False
    store_transcripts: StrictBool = True
    retention_days: RetentionDays = MAX_RETENTION_DAYS
    transfer_number: PhoneNumber | None = None
    tools: list[Tool] = Field(default_factory=_default_tools)
    transfer_mode: Literal["cold", "warm"] = Field(
        default="cold", description="warm: the person hears a summary before the caller"
    )
    http_tools: list[HttpToolFields] = Field(default_factory=list, max_length=MAX_HTTP_TOOLS)
    dtmf: DigitFields | None = Field(
        default=None, description="Keypad input for the model; null: digits are not collected"
    )
    extraction_schema: dict[str, JsonValue] | None = Field(
        default=None,
        json_schema_extra=_OBJECT_SCHEMA,
        description="JSON schema (type object) of the fields extracted for call.ended",
    )


#: Fields a PATCH may set to null (to clear them); null is refused for the others.
_NULLABLE = frozenset({"transfer_number", "announcement", "dtmf", "extraction_schema"})


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
    transfer_mode: Literal["cold", "warm"] | Absent = None
    http_tools: Annotated[list[HttpToolFields], Field(max_length=MAX_HTTP_TOOLS)] | Absent = None
    dtmf: DigitFields | None = None
    extraction_schema: (
        Annotated[dict[str, JsonValue], Field(json_schema_extra=_OBJECT_SCHEMA)] | None
    ) = None


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
            transfer_mode=a.transfer_mode,  # type: ignore[arg-type]
            http_tools=[HttpToolFields(**t.to_dict()) for t in a.http_tools],
            dtmf=DigitFields(**a.dtmf.to_dict()) if a.dtmf else None,
            extraction_schema=dict(a.extraction_schema) if a.extraction_schema else None,
            created_at=dt.datetime.fromtimestamp(a.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(a.updated_at, dt.UTC),
        )


class AgentList(BaseModel):
    """The tenant's agents, by name."""

    items: list[AgentOut]


def _tools(raw: list[dict[str, Any]], egress: Egress | None) -> tuple[HttpTool, ...]:
    """The agent's HTTP tools, each checked (a 422 problem with its code otherwise)."""
    names = [t["name"] for t in raw]
    reserved = sorted(set(names) & RESERVED_TOOL_NAMES)
    if reserved:
        raise ApiProblem(422, "tool_name_reserved", f"tool names taken by the platform: {reserved}")
    if len(set(names)) != len(names):
        raise ApiProblem(422, "duplicate_tool_names", "tool names must be unique in an agent")
    out = []
    for t in raw:
        if egress is not None:
            try:
                egress.check_url(t["url"])
            except EgressRefused as e:
                raise ApiProblem(422, "tool_url_refused", f"tool {t['name']!r}: {e}") from e
        try:
            out.append(HttpTool(**t))
        except ValueError as e:
            raise ApiProblem(422, "invalid_json_schema", str(e)) from e
    return tuple(out)


def _check_voice(voices: Voices, voice: str, language: str) -> None:
    """422 unless ``voice`` is installed and speaks ``language`` (any voice for ``auto``)."""
    try:
        info = voices.info(voice)
    except KeyError:
        raise ApiProblem(
            422, "unknown_voice", f"unknown voice {voice!r}; installed: {voices.names()}"
        ) from None
    if language != AUTO_LANGUAGE and info.language != base_language(language):
        raise ApiProblem(
            422,
            "voice_language_mismatch",
            f"voice {voice!r} speaks {info.language!r}, not {language!r}; the voices of "
            f"{language!r}: {[i.name for i in voices.of_language(language)]}",
        )


def _build(
    tenant: str,
    fields: dict[str, Any],
    voices: Voices,
    egress: Egress | None = None,
    **keep: object,
) -> Agent:
    """A validated Agent, or a 422 with the reason."""
    _check_voice(voices, fields["voice"], fields["language"])
    prompt = fields.pop("system_prompt")
    fields["tools"] = tuple(fields["tools"])
    fields["http_tools"] = _tools(fields.get("http_tools") or [], egress)
    fields["dtmf"] = DigitCollection(**fields["dtmf"]) if fields.get("dtmf") else None
    if fields.get("extraction_schema") is not None:
        try:
            Agent(name="check", prompt="check", extraction_schema=fields["extraction_schema"])
        except ValueError as e:
            raise ApiProblem(422, "invalid_json_schema", str(e)) from e
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
    voices: Voices,
    egress: Egress | None = None,
    tool_secrets: ToolSecrets | None = None,
) -> APIRouter:
    """``/v1/agents``: agents speak one of ``voices``; ``prepare(agent)`` readies its phrases.

    HTTP tools' URLs must pass ``egress``'s rules (https outside development, no address
    that is not public unless allowed), and need the tenant's tools secret (``tool_secrets``)
    to exist: the customer verifies the tools' requests with it.
    """
    r = APIRouter(prefix="/v1/agents", tags=["agents"], responses=API_ERRORS)

    as_editor = tenant_key(tenants, Role.EDITOR)
    editor = Depends(as_editor)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    # Writes make the shared cores synthesize phrases: metered per tenant (429 rate_limited).
    limited = write_limit(writes, as_editor)
    _VOICES.update(voices.names())

    async def find(caller: Caller, agent_id: str) -> Agent:
        try:
            return await directory.get_agent_by_id(agent_id, caller.tenant_id)
        except AgentNotFound as e:
            raise HTTPException(404, "no such agent") from e

    async def secret_exists(caller: Caller, http_tools: list[Any] | None) -> None:
        if not http_tools or tool_secrets is None:
            return
        if not (await tool_secrets.info(caller.tenant_id)).exists:
            raise ApiProblem(
                422,
                "tools_secret_missing",
                "HTTP tools are signed with your tools secret: create it first "
                "(POST /v1/tools/secret)",
            )

    @r.post("", status_code=201, response_model=AgentOut, dependencies=[limited])
    async def create(body: AgentFields, caller: Caller = editor) -> AgentOut:
        """Create an agent."""
        fields = body.model_dump()
        if body.voice is None and "voice" in body.model_fields_set:
            raise HTTPException(422, "these fields cannot be null: voice")
        if "announcement" not in body.model_fields_set:  # the default, in the agent's language
            fields["announcement"] = default_announcement(body.language)
        if "greeting" not in body.model_fields_set:  # the default, in the agent's language
            fields["greeting"] = default_greeting(body.language)
        if body.voice is None:  # the default voice of the agent's language
            fields["voice"] = voices.default_for(body.language)
        agent = _build(caller.tenant_id, fields, voices, egress)
        await secret_exists(caller, fields["http_tools"])
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
        target = changes.get("language", current.language)
        if (
            "announcement" not in changes
            and is_default(current.announcement)
            and current.announcement.strip() != default_announcement(target)
        ):  # a default announcement follows the language (also one stored in another's)
            changes["announcement"] = default_announcement(target)
        if (
            changes.get("language", current.language) != current.language
            and "greeting" not in changes
            and current.greeting.strip() in default_greetings()
        ):  # so does a default greeting
            changes["greeting"] = default_greeting(changes["language"])
        language = changes.get("language", current.language)
        if "voice" not in changes:
            # The voice follows the language, unless it speaks it; a stored voice this process
            # does not have, or of another language (an agent made before voices had to
            # match), becomes the one its calls speak with.
            changes["voice"] = (
                voices.voice_for(current.voice, language)
                if language != AUTO_LANGUAGE
                else current.voice
                if current.voice in voices.names()
                else voices.default
            )
        merged = AgentOut.of(current).model_dump() | changes
        if "transfer" in merged["tools"] and not merged["transfer_number"]:  # stored + changed
            raise ApiProblem(
                422, "transfer_number_missing", "the transfer tool needs a transfer_number"
            )
        fields = {k: merged[k] for k in AgentFields.model_fields}
        kept = {"agent_id": current.agent_id, "created_at": current.created_at}
        agent = _build(caller.tenant_id, fields, voices, egress, **kept, updated_at=time.time())
        await secret_exists(caller, changes.get("http_tools"))
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
