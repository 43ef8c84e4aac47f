"""The number directory: which tenant and agent answer a number, stored in Redis."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

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
MAX_RETENTION_DAYS = 180  # recordings: at most 6 months (CNIL)


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
    agent_id: str = field(default_factory=new_agent_id)
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"agent name {self.name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if self.language not in _LANGUAGES:
            raise ValueError(
                f"language {self.language!r} is not supported; use one of {sorted(_LANGUAGES)}"
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
        if not self.updated_at:
            object.__setattr__(self, "updated_at", self.created_at)

    def to_redis(self) -> dict[str, str]:
        """Flat string fields for a Redis hash."""
        out: dict[str, str] = {}
        for k, v in asdict(self).items():
            if isinstance(v, bool):
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
