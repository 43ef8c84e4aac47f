"""The number directory: which tenant and agent answer a number, stored in Redis."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from redis.asyncio import Redis

from routing import keys
from routing.errors import AgentExists, AgentNotFound, InvalidNumber, NumberTaken

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


@dataclass(frozen=True)
class Agent:
    """How an agent answers: its prompt, language, voice and the words it starts with."""

    name: str
    prompt: str
    language: str = "en"
    tenant: str = DEFAULT_TENANT
    voice: str = DEFAULT_VOICE
    greeting: str = DEFAULT_GREETING
    announcement: str = DEFAULT_ANNOUNCEMENT
    created_at: float = field(default_factory=time.time)

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
            raise ValueError("the announcement (AI disclosure and recording notice) is required")

    def to_redis(self) -> dict[str, str]:
        """Flat string fields for a Redis hash."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Agent:
        """Inverse of :meth:`to_redis`."""
        return cls(**{**raw, "created_at": float(raw["created_at"])})  # type: ignore[arg-type]


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
        key = keys.agent(agent.tenant, agent.name)
        async with self.redis.pipeline(transaction=True) as p:
            p.exists(key)
            p.hsetnx(key, "name", agent.name)
            exists, _ = await p.execute()
        if exists:
            raise AgentExists(f"agent {agent.name!r} exists already")
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping=keys.fields(agent.to_redis()))
            p.sadd(keys.agents(agent.tenant), agent.name)
            await p.execute()
        return agent

    async def get_agent(self, name: str, tenant: str = DEFAULT_TENANT) -> Agent:
        """The agent ``name``; :class:`AgentNotFound` if there is none."""
        raw = keys.strs(await self.redis.hgetall(keys.agent(tenant, name)))
        if not raw or "prompt" not in raw:
            raise AgentNotFound(f"no agent named {name!r}")
        return Agent.from_redis(raw)

    async def list_agents(self, tenant: str = DEFAULT_TENANT) -> list[Agent]:
        """Every agent of the tenant, by name."""
        names = sorted(str(n) for n in await self.redis.smembers(keys.agents(tenant)))
        return [await self.get_agent(n, tenant) for n in names]

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
        e164 = normalise_number(raw_number)
        agent = await self.get_agent(agent_name, tenant)
        current = keys.strs(await self.redis.hgetall(keys.number(e164)))
        if current and (current["tenant"], current["agent"]) != (tenant, agent_name):
            raise NumberTaken(f"{e164} already answers for agent {current['agent']!r}")
        fields = {"tenant": tenant, "agent": agent_name, **(holding or {})}
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

    async def lookup(self, raw_number: str) -> Route | None:
        """Who answers ``raw_number``; ``None`` for a number we do not serve."""
        try:
            e164 = normalise_number(raw_number)
        except InvalidNumber:
            return None
        raw = keys.strs(await self.redis.hgetall(keys.number(e164)))
        if not raw:
            return None
        try:
            agent = await self.get_agent(raw["agent"], raw["tenant"])
        except AgentNotFound:
            return None
        return Route(e164, raw["tenant"], agent, raw.get("carrier") or None)

    async def list_numbers(self, tenant: str = DEFAULT_TENANT) -> list[tuple[str, str]]:
        """(number, agent name) of every number of the tenant."""
        out = []
        for e164 in sorted(str(n) for n in await self.redis.smembers(keys.numbers(tenant))):
            raw = keys.strs(await self.redis.hgetall(keys.number(e164)))
            if raw:
                out.append((e164, raw["agent"]))
        return out
