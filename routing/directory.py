"""The number directory: which tenant and agent answer a number, stored in Redis."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from redis.asyncio import Redis

from routing.errors import AgentExists, AgentInUse, AgentNotFound, InvalidNumber, NumberTaken
from store import keys

DEFAULT_TENANT = "default"
DEFAULT_ANNOUNCEMENT = (
    "Hello. You are speaking with an AI assistant, an automated system, not a person. "
    "This call may be recorded."
)
DEFAULT_GREETING = "How can I help you today?"
DEFAULT_VOICE = "en_US-joe-medium"
#: An agent's language when each call takes the caller's (detected on the first utterance).
AUTO_LANGUAGE = "auto"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LANGUAGES = frozenset({"en", "fr", "de", "es", "it", "nl", "pt", "pl", "sv", "da", "fi"})


def normalise_number(raw: str) -> str:
    """``raw`` as E.164 (spaces, dashes, dots and brackets removed), or :class:`InvalidNumber`."""
    cleaned = re.sub(r"[\s\-().]", "", raw)
    if not _E164.match(cleaned):
        raise InvalidNumber(f"{raw!r} is not an E.164 phone number such as +15551234567")
    return cleaned


TOOLS = frozenset({"end_call", "transfer"})
#: Names the platform's own tools use; an HTTP tool cannot take them.
RESERVED_TOOL_NAMES = frozenset({"end_call", "transfer", "stop_recording", "collect_digits"})
TRANSFER_MODES = ("cold", "warm")
#: A tool's arguments go in a signed JSON body: only methods that carry one.
HTTP_METHODS = ("POST", "PUT", "PATCH")
MAX_HTTP_TOOLS = 16
#: A caller waits while a tool runs: its timeout is short.
TOOL_TIMEOUT_RANGE_S = (0.5, 10.0)
_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_RETENTION_DAYS = 180  # recordings: at most 6 months (CNIL)


#: Keywords refused in a customer's schema: a regular expression is run on the model's output
#: in the call's process (one that backtracks could stall every call), and a reference may
#: point outside the schema.
_REFUSED_KEYWORDS = frozenset({"pattern", "patternProperties", "$dynamicRef", "$recursiveRef"})


def _refused_keywords(node: Any) -> set[str]:
    """The refused keywords anywhere in ``node``, and ``$ref`` values that leave the schema."""
    found: set[str] = set()
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in _REFUSED_KEYWORDS:
                found.add(key)
            elif key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
                found.add("$ref (only references inside the schema, '#...')")
            found |= _refused_keywords(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refused_keywords(item)
    return found


def _object_schema(schema: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``schema`` as a plain dict if it is a JSON schema of an object, else ValueError."""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise ValueError(f"{what} must be a JSON schema with type 'object'")
    refused = _refused_keywords(schema)
    if refused:
        raise ValueError(f"{what} may not use {', '.join(sorted(refused))}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} is not JSON: {e}") from e
    if len(text) > 8000:
        raise ValueError(f"{what} is longer than 8000 characters")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"{what} is not a valid JSON schema: {e.message}") from e
    return dict(json.loads(text))


@dataclass(frozen=True)
class HttpTool:
    """A tool the agent's model may call: the platform sends its arguments to ``url``.

    ``parameters`` is the JSON schema of the arguments (an object); they are sent as a
    signed JSON body (POST, PUT or PATCH).
    """

    name: str
    description: str
    url: str
    method: str = "POST"
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not _TOOL_NAME.match(self.name) or self.name in RESERVED_TOOL_NAMES:
            raise ValueError(
                f"tool name {self.name!r}: 1-64 letters, digits, '_' or '-', starting with a "
                f"letter, and not one of {sorted(RESERVED_TOOL_NAMES)}"
            )
        if not self.description.strip() or len(self.description) > 1024:
            raise ValueError(f"tool {self.name!r} needs a description (at most 1024 characters)")
        if not re.match(r"^https?://[^/\s?#]+", self.url) or len(self.url) > 2048:
            raise ValueError(f"tool {self.name!r}: url must be an http(s) URL with a host")
        object.__setattr__(self, "method", self.method.upper())
        if self.method not in HTTP_METHODS:
            raise ValueError(f"tool {self.name!r}: method must be one of {list(HTTP_METHODS)}")
        low, high = TOOL_TIMEOUT_RANGE_S
        if not low <= float(self.timeout_s) <= high:
            raise ValueError(f"tool {self.name!r}: timeout_s must be between {low} and {high}")
        object.__setattr__(self, "timeout_s", float(self.timeout_s))
        object.__setattr__(
            self, "parameters", _object_schema(self.parameters, f"tool {self.name!r} parameters")
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return {
            "name": self.name,
            "description": self.description,
            "url": self.url,
            "method": self.method,
            "parameters": dict(self.parameters),
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True)
class DigitCollection:
    """How the caller's keypad digits are gathered into one input for the model.

    A sequence ends at ``terminator`` (not part of it; "" for none), at ``max_digits``, or
    ``timeout_s`` after the last key.
    """

    max_digits: int = 10
    terminator: str = "#"
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.max_digits) <= 32:
            raise ValueError("dtmf.max_digits must be between 1 and 32")
        if self.terminator not in ("#", "*", ""):
            raise ValueError("dtmf.terminator must be '#', '*' or empty")
        if not 1.0 <= float(self.timeout_s) <= 30.0:
            raise ValueError("dtmf.timeout_s must be between 1 and 30")
        object.__setattr__(self, "timeout_s", float(self.timeout_s))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)


def new_agent_id() -> str:
    """A fresh agent id."""
    return "agt_" + secrets.token_hex(8)


@dataclass(frozen=True)
class Agent:
    """How an agent answers: prompt, language, voice, first words, recording and retention."""

    name: str
    prompt: str
    language: str = "en"
    tenant: str = DEFAULT_TENANT
    voice: str = DEFAULT_VOICE
    greeting: str = DEFAULT_GREETING
    announcement: str = DEFAULT_ANNOUNCEMENT
    recording: bool = False
    store_transcripts: bool = True
    retention_days: int = MAX_RETENTION_DAYS
    transfer_number: str | None = None
    tools: tuple[str, ...] = ("end_call",)
    #: "cold": the caller is bridged at once; "warm": the person first hears a summary.
    transfer_mode: str = "cold"
    http_tools: tuple[HttpTool, ...] = ()
    #: Keypad input for the model (None: digits other than 0 and 9 are ignored).
    dtmf: DigitCollection | None = None
    #: JSON schema of the fields the model extracts from the call for ``call.ended``.
    extraction_schema: Mapping[str, Any] | None = None
    agent_id: str = field(default_factory=new_agent_id)
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"agent name {self.name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if self.language not in _LANGUAGES and self.language != AUTO_LANGUAGE:
            raise ValueError(
                f"language {self.language!r} is not supported; use one of "
                f"{[*sorted(_LANGUAGES), AUTO_LANGUAGE]}"
            )
        if not self.prompt.strip():
            raise ValueError("an agent needs a prompt")
        if not self.announcement.strip():
            raise ValueError(
                "the announcement (AI disclosure and recording notice) cannot be empty"
            )
        if not 1 <= self.retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(f"retention_days must be between 1 and {MAX_RETENTION_DAYS}")
        if set(self.tools) - TOOLS:
            raise ValueError(
                f"unknown tools {sorted(set(self.tools) - TOOLS)}; use {sorted(TOOLS)}"
            )
        if self.transfer_number:
            object.__setattr__(self, "transfer_number", normalise_number(self.transfer_number))
        if "transfer" in self.tools and not self.transfer_number:
            raise ValueError("the transfer tool needs a transfer_number")
        if self.transfer_mode not in TRANSFER_MODES:
            raise ValueError(f"transfer_mode must be one of {list(TRANSFER_MODES)}")
        object.__setattr__(self, "http_tools", tuple(self.http_tools))
        if len(self.http_tools) > MAX_HTTP_TOOLS:
            raise ValueError(f"at most {MAX_HTTP_TOOLS} HTTP tools per agent")
        names = [t.name for t in self.http_tools]
        if len(set(names)) != len(names):
            raise ValueError("HTTP tool names must be unique within an agent")
        if self.extraction_schema is not None:
            object.__setattr__(
                self,
                "extraction_schema",
                _object_schema(self.extraction_schema, "extraction_schema"),
            )
        if not self.updated_at:
            object.__setattr__(self, "updated_at", self.created_at)

    def to_redis(self) -> dict[str, str]:
        """Flat string fields for a Redis hash."""
        out: dict[str, str] = {}
        structured = {
            "http_tools": json.dumps([t.to_dict() for t in self.http_tools]),
            "dtmf": json.dumps(self.dtmf.to_dict()) if self.dtmf else "",
            "extraction_schema": (
                json.dumps(self.extraction_schema) if self.extraction_schema else ""
            ),
        }
        for k, v in asdict(self).items():
            if k in structured:
                out[k] = structured[k]
            elif isinstance(v, bool):
                out[k] = "1" if v else "0"
            elif isinstance(v, tuple | list):
                out[k] = ",".join(v)
            else:
                out[k] = "" if v is None else str(v)
        return out

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Agent:
        """Inverse of :meth:`to_redis`."""
        return cls(
            name=raw["name"],
            prompt=raw["prompt"],
            language=raw["language"],
            tenant=raw["tenant"],
            voice=raw["voice"],
            greeting=raw["greeting"],
            announcement=raw["announcement"],
            recording=raw.get("recording") == "1",
            store_transcripts=raw.get("store_transcripts", "1") == "1",
            retention_days=int(raw.get("retention_days") or MAX_RETENTION_DAYS),
            transfer_number=raw.get("transfer_number") or None,
            tools=tuple(t for t in raw.get("tools", "end_call").split(",") if t),
            transfer_mode=raw.get("transfer_mode") or "cold",
            http_tools=tuple(HttpTool(**t) for t in json.loads(raw.get("http_tools") or "[]")),
            dtmf=DigitCollection(**json.loads(raw["dtmf"])) if raw.get("dtmf") else None,
            extraction_schema=(
                json.loads(raw["extraction_schema"]) if raw.get("extraction_schema") else None
            ),
            agent_id=raw["agent_id"],
            created_at=float(raw["created_at"]),
            updated_at=float(raw.get("updated_at") or raw["created_at"]),
        )


@dataclass(frozen=True)
class Route:
    """Who answers a number."""

    number: str
    tenant: str
    agent: Agent
    carrier: str | None = None  # the carrier holding the number, when rented through us


class Directory:
    """Agents and numbers of every tenant."""

    def __init__(self, redis: Redis) -> None:
        """Use ``redis`` (decode_responses=True)."""
        self.redis = redis

    async def add_agent(self, agent: Agent) -> Agent:
        """Store a new agent; :class:`AgentExists` if the name is taken in its tenant."""
        if not await self.redis.hsetnx(keys.agent_names(agent.tenant), agent.name, agent.agent_id):
            raise AgentExists(f"agent {agent.name!r} exists already")
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.agent(agent.tenant, agent.agent_id), mapping=keys.fields(agent.to_redis()))
            p.sadd(keys.agents(agent.tenant), agent.agent_id)
            await p.execute()
        return agent

    async def get_agent_by_id(self, agent_id: str, tenant: str = DEFAULT_TENANT) -> Agent:
        """The tenant's agent ``agent_id``; :class:`AgentNotFound` (also for another tenant's)."""
        raw = keys.strs(await self.redis.hgetall(keys.agent(tenant, agent_id)))
        if not raw or "prompt" not in raw:
            raise AgentNotFound(f"no agent {agent_id!r}")
        return Agent.from_redis(raw)

    async def get_agent(self, name: str, tenant: str = DEFAULT_TENANT) -> Agent:
        """The agent called ``name``; :class:`AgentNotFound` if there is none."""
        agent_id = await self.redis.hget(keys.agent_names(tenant), name)
        if not agent_id:
            raise AgentNotFound(f"no agent named {name!r}")
        return await self.get_agent_by_id(str(agent_id), tenant)

    async def list_agents(self, tenant: str = DEFAULT_TENANT) -> list[Agent]:
        """Every agent of the tenant, by name."""
        ids = [str(i) for i in await self.redis.smembers(keys.agents(tenant))]
        agents = [await self.get_agent_by_id(i, tenant) for i in ids]
        return sorted(agents, key=lambda a: a.name)

    async def update_agent(self, agent: Agent, previous_name: str) -> Agent:
        """Store ``agent`` (same id); a new name must be free in the tenant."""
        names = keys.agent_names(agent.tenant)
        if agent.name != previous_name:
            if not await self.redis.hsetnx(names, agent.name, agent.agent_id):
                raise AgentExists(f"agent {agent.name!r} exists already")
            await self.redis.hdel(names, previous_name)
        await self.redis.hset(
            keys.agent(agent.tenant, agent.agent_id), mapping=keys.fields(agent.to_redis())
        )
        return agent

    async def numbers_of(self, agent_id: str, tenant: str = DEFAULT_TENANT) -> list[str]:
        """The tenant's numbers that ring ``agent_id``."""
        out = []
        for e164 in sorted(str(n) for n in await self.redis.smembers(keys.numbers(tenant))):
            if await self.redis.hget(keys.number(e164), "agent") == agent_id:
                out.append(e164)
        return out

    async def delete_agent(self, agent: Agent) -> None:
        """Remove an agent that no number rings (:class:`AgentInUse` otherwise)."""
        in_use = await self.numbers_of(agent.agent_id, agent.tenant)
        if in_use:
            raise AgentInUse(f"agent {agent.name!r} still answers {', '.join(in_use)}")
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.agent(agent.tenant, agent.agent_id))
            p.srem(keys.agents(agent.tenant), agent.agent_id)
            p.hdel(keys.agent_names(agent.tenant), agent.name)
            await p.execute()

    async def add_number(
        self,
        raw_number: str,
        agent_name: str,
        tenant: str = DEFAULT_TENANT,
        holding: Mapping[str, str] | None = None,
    ) -> Route:
        """Point a number at an agent; :class:`NumberTaken` if another agent has it.

        ``holding`` records which carrier holds the number (``carrier``, ``carrier_id``) and
        the routing decision that chose it, for numbers rented through the platform.
        """
        return await self.attach(raw_number, await self.get_agent(agent_name, tenant), holding)

    async def attach(
        self,
        raw_number: str,
        agent: Agent,
        holding: Mapping[str, str] | None = None,
        reassign: bool = False,
    ) -> Route:
        """Point a number at ``agent`` (of ``agent.tenant``); see :meth:`add_number`.

        With ``reassign``, a number of the same tenant moves to ``agent``, keeping its carrier.
        """
        tenant = agent.tenant
        e164 = normalise_number(raw_number)
        current = keys.strs(await self.redis.hgetall(keys.number(e164)))
        if current and current["tenant"] != tenant:
            raise NumberTaken(f"{e164} is not available")
        if current and current["agent"] != agent.agent_id:
            if not reassign:
                raise NumberTaken(f"{e164} already answers for another agent")
            holding = {k: v for k, v in current.items() if k not in ("tenant", "agent")}
        fields = {"tenant": tenant, "agent": agent.agent_id, **(holding or {})}
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.number(e164), mapping=keys.fields(fields))
            p.sadd(keys.numbers(tenant), e164)
            await p.execute()
        return Route(e164, tenant, agent, fields.get("carrier") or None)

    async def remove_number(self, raw_number: str, tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        """Forget a number of the tenant; its stored fields (empty if it was not ours)."""
        e164 = normalise_number(raw_number)
        raw = keys.strs(await self.redis.hgetall(keys.number(e164)))
        if not raw or raw.get("tenant") != tenant:
            return {}
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.number(e164))
            p.srem(keys.numbers(tenant), e164)
            await p.execute()
        return raw

    async def number_fields(self, e164: str) -> dict[str, str]:
        """What is stored of ``e164``: tenant, agent, holding carrier, ``routing_*`` ({}: none)."""
        return keys.strs(await self.redis.hgetall(keys.number(e164)))

    async def lookup(self, raw_number: str) -> Route | None:
        """Who answers ``raw_number``; ``None`` for a number we do not serve."""
        try:
            e164 = normalise_number(raw_number)
        except InvalidNumber:
            return None
        raw = keys.strs(await self.redis.hgetall(keys.number(e164)))
        if not raw.get("agent") or not raw.get("tenant"):
            return None
        fields = keys.strs(await self.redis.hgetall(keys.agent(raw["tenant"], raw["agent"])))
        if "prompt" not in fields:
            return None
        return Route(e164, raw["tenant"], Agent.from_redis(fields), raw.get("carrier") or None)

    async def list_numbers(self, tenant: str = DEFAULT_TENANT) -> list[tuple[str, str]]:
        """(number, agent name) of every number of the tenant."""
        out = []
        for e164 in sorted(str(n) for n in await self.redis.smembers(keys.numbers(tenant))):
            raw = keys.strs(await self.redis.hgetall(keys.number(e164)))
            if raw:
                try:
                    name = (await self.get_agent_by_id(raw["agent"], tenant)).name
                except AgentNotFound:
                    name = "?"
                out.append((e164, name))
        return out
