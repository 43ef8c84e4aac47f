"""The Redis key layout of the whole platform, in one place.

===============================================  ======  ===============================
key                                              type    holds
===============================================  ======  ===============================
``agent:{tenant}:{agent_id}``                    hash    an agent's configuration
``agents:{tenant}``                              set     the tenant's agent ids
``agentnames:{tenant}``                          hash    agent name -> agent id
``number:{e164}``                                hash    tenant, agent id, holding carrier
``numbers:{tenant}``                             set     the tenant's numbers
``call:{call_id}``                               hash    one call: sealed parties, agent, state
``call:{call_id}:events``                        list    CallEvent JSON, in arrival order
``call:{call_id}:transcript``                    list    turns: role, text, at
``calls``                                        zset    call ids by creation time
``calls:{tenant}``                               zset    the tenant's call ids by creation time
``carrier:{carrier}:call:{carrier_call_id}``     string  our call id for a carrier's id
``dedupe:{carrier}:{kind}:{key}``                string  marks a delivery already applied
``early:{carrier}:{carrier_call_id}``            string  a final status that came first
``tenant:{tenant_id}``                           hash    a tenant: name, created_at
``tenants``                                      set     every tenant id
``apikey:{key_id}``                              hash    a key: tenant, role, digest, expiry
``tenant:{tenant_id}:keys``                      set     the tenant's key ids
``audit:{tenant_id}``                            stream  the tenant's append-only audit log
``limits:{tenant}:rate``                         zset    outbound call ids by placing time (60 s)
``limits:{tenant}:open``                         zset    open outbound call ids by latest end
``limits:{tenant}:spend:{day}``                  string  cents reserved/spent that UTC day
``limits:{tenant}:writes``                       hash    configuration-write token bucket
``limits:{tenant}:inbound``                      zset    inbound calls in progress by latest end
``idem:{key_id}:{digest}:{key}``                 hash    an Idempotency-Key's first response, sealed
``idems:{tenant}``                               hash    the tenant's stored responses -> subjects
``kek:{tenant}``                                 hash    the tenant's KEKs, wrapped (master key)
``obj:{object_id}``                              hash    an encrypted object: identity, wrapped DEK
``call:{call_id}:objects``                       set     the call's encrypted object ids
``objects:{tenant}``                             set     the tenant's encrypted object ids
``retention``                                    zset    call ids by the time they expire
``call:{call_id}`` field ``legal_hold``          hash    set while a legal hold blocks deletion
===============================================  ======  ===============================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def strs(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash read by a ``decode_responses=True`` client, typed as the strings it holds."""
    return {str(k): str(v) for k, v in raw.items()}


def fields(record: Mapping[str, str]) -> Mapping[Any, Any]:
    """A hash to write (redis-py types ``mapping`` with an invariant, wider key type)."""
    return record


#: How long a delivery is remembered for de-duplication (carriers retry within minutes).
DEDUPE_TTL_S = 7 * 24 * 3600


#: Agents' hashes are ``AGENT_PREFIX{tenant}:{agent_id}`` (the number lookup script builds the
#: name of a number's agent from it: a key named inside Lua, fine on the one Redis deployed).
AGENT_PREFIX = "agent:"


def agent(tenant: str, agent_id: str) -> str:
    """An agent's hash."""
    return f"{AGENT_PREFIX}{tenant}:{agent_id}"


def agents(tenant: str) -> str:
    """The set of a tenant's agent ids."""
    return f"agents:{tenant}"


def agent_names(tenant: str) -> str:
    """A tenant's agent names, each mapped to its id (names are unique in a tenant)."""
    return f"agentnames:{tenant}"


def number(e164: str) -> str:
    """A number's hash."""
    return f"number:{e164}"


def numbers(tenant: str) -> str:
    """The set of a tenant's numbers."""
    return f"numbers:{tenant}"


#: Calls' hashes are ``CALL_PREFIX{call_id}`` (the call-opening script reads a repeated call's
#: state by this name).
CALL_PREFIX = "call:"


def call(call_id: str) -> str:
    """A call's hash."""
    return f"{CALL_PREFIX}{call_id}"


def call_events(call_id: str) -> str:
    """A call's event list."""
    return f"call:{call_id}:events"


def call_transcript(call_id: str) -> str:
    """A call's transcript list."""
    return f"call:{call_id}:transcript"


CALLS = "calls"


def carrier_call(carrier: str, carrier_call_id: str) -> str:
    """Maps a carrier's call id to ours."""
    return f"carrier:{carrier}:call:{carrier_call_id}"


def dedupe(carrier: str, kind: str, key: str) -> str:
    """Marks one delivery of a webhook as applied."""
    return f"dedupe:{carrier}:{kind}:{key}"


def early_status(carrier: str, carrier_call_id: str) -> str:
    """A terminal status that arrived before the call's first webhook."""
    return f"early:{carrier}:{carrier_call_id}"


TENANTS = "tenants"


def tenant(tenant_id: str) -> str:
    """A tenant's hash."""
    return f"tenant:{tenant_id}"


def tenant_keys(tenant_id: str) -> str:
    """The set of a tenant's key ids."""
    return f"tenant:{tenant_id}:keys"


def api_key(key_id: str) -> str:
    """An API key's hash (digest of its secret, never the secret)."""
    return f"apikey:{key_id}"


def audit(tenant_id: str) -> str:
    """A tenant's audit stream."""
    return f"audit:{tenant_id}"


def tenant_calls(tenant: str) -> str:
    """A tenant's call ids by creation time."""
    return f"calls:{tenant}"


def limit_rate(tenant: str) -> str:
    """A tenant's outbound calls of the last minute, scored by when they were placed."""
    return f"limits:{tenant}:rate"


def limit_open(tenant: str) -> str:
    """A tenant's open outbound calls, scored by the time they must be over by."""
    return f"limits:{tenant}:open"


def limit_spend(tenant: str, day: str) -> str:
    """Cents a tenant reserved or spent on outbound calls on a UTC ``day`` (YYYY-MM-DD)."""
    return f"limits:{tenant}:spend:{day}"


def idempotency(scope: str, key: str) -> str:
    """The first response to a request with ``Idempotency-Key: key`` from credentials ``scope``."""
    return f"idem:{scope}:{key}"


def idempotency_index(tenant: str) -> str:
    """The tenant's stored responses (slot names), each mapped to the subjects it is about."""
    return f"idems:{tenant}"


def limit_writes(tenant: str) -> str:
    """A tenant's configuration-write token bucket (tokens, time of the last write)."""
    return f"limits:{tenant}:writes"


def limit_inbound(tenant: str) -> str:
    """A tenant's inbound calls in progress (``{carrier}:{carrier call id}``) by latest end."""
    return f"limits:{tenant}:inbound"


def kek(tenant: str) -> str:
    """A tenant's key-encryption keys (``current`` and ``v{n}``, each wrapped)."""
    return f"kek:{tenant}"


def obj(object_id: str) -> str:
    """An encrypted object's metadata."""
    return f"obj:{object_id}"


def call_objects(call_id: str) -> str:
    """The set of a call's encrypted object ids."""
    return f"call:{call_id}:objects"


def tenant_objects(tenant: str) -> str:
    """The set of a tenant's encrypted object ids."""
    return f"objects:{tenant}"


RETENTION = "retention"
