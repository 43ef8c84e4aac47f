"""The Redis key layout of the whole platform, in one place.

Every key name starts with the prefix set by :func:`use_prefix` (``BONMONIQ_REDIS_KEY_PREFIX``,
empty by default), so several platforms can share one Redis. Lua scripts are handed every key
they touch in ``KEYS``. Moving to Redis Cluster needs each tenant's and each call's keys in one
hash slot (a hash tag such as ``call:{call_id}:events`` around the id), named here; the scripts
and transactions that also touch the platform-wide indexes (``calls``, ``retention``, ``tenants``)
would then write those in a second step.

Redis Cluster hashes only the part of a name between its first ``{`` and the next ``}`` (the
braces in the table below are placeholders, not hash tags). A prefix in braces
(``BONMONIQ_REDIS_KEY_PREFIX={bonmoniq}:``) puts every key of the platform in one slot: correct
on a cluster as it is, on one shard. Spreading over shards is the change above, in this module
alone. The pub/sub channels (``node:*:commands``, ``reply:*``) are not keys: a plain PUBLISH
reaches every node of a cluster. The platform's client (``store/redis.py``) speaks to one master,
directly or through Sentinel; a Redis Cluster client is not wired in.

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
``call:{call_id}:transcript``                    list    legacy turns, sealed at start (migrate.py)
``calls``                                        zset    call ids by creation time
``calls:{tenant}``                               zset    the tenant's call ids by creation time
``carrier:{carrier}:call:{carrier_call_id}``     string  our call id for a carrier's id
``dedupe:{carrier}:{kind}:{key}``                string  marks a delivery already applied
``early:{carrier}:{carrier_call_id}``            string  a final status that came first
``tenant:{tenant_id}``                           hash    a tenant: name, created_at, limits
``tenants``                                      set     every tenant id
``apikey:{key_id}``                              hash    a key: tenant, role, digest, expiry
``tenant:{tenant_id}:keys``                      set     the tenant's key ids
``audit:{tenant_id}``                            stream  the tenant's append-only audit log
``audit:_operator``                              stream  platform-wide operator actions
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
``nodes``                                        zset    live process ids by lease expiry (ms)
``node:{node_id}``                               string  a process's heartbeat lease (PX TTL)
``node:{node_id}:calls``                         set     call ids whose media runs on that process
``node:{node_id}:commands``                      channel live-call commands for that process
``reply:{request_id}``                           channel the answer to one live-call command
``lease:{name}``                                 string  a job one process runs at a time (token)
``carriers:down``                                hash    carrier -> time it is usable again
``transfer:{token}``                             hash    warm transfer summary audio, sealed (TTL)
``tools:{tenant}:secret``                        hash    the tenant's tool-signing secret, sealed
``webhooks:{tenant}``                            set     the tenant's webhook endpoint ids
``webhook:{tenant}:{endpoint_id}``               hash    an endpoint: sealed URL and secret, events
``delivery:{delivery_id}``                       hash    a webhook delivery: sealed payload, state
``delivery:{delivery_id}:attempts``              list    each attempt's time, status, error (JSON)
``deliveries:{tenant}``                          zset    the tenant's delivery ids by creation time
``deliveries:due``                               zset    delivery ids by next attempt (or lease end)
``call:{call_id}:deliveries``                    set     a call's webhook delivery ids (erasure)
``sipaccount:{tenant}:{account_id}``             hash    a SIP account: registrar, sealed password
``sipaccounts:{tenant}``                         set     the tenant's SIP account ids
``sipaccounts``                                  hash    every SIP account id -> its tenant
``sipreg:{account_id}``                          hash    a SIP account's registration state
``webrtctoken:{digest}``                         string  a browser-call token's tenant and agent
===============================================  ======  ===============================

A call under legal hold has the field ``legal_hold`` in its hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_prefix = ""


def use_prefix(prefix: str) -> None:
    """Start every key name with ``prefix`` from now on (the composition root calls it once)."""
    global _prefix
    _prefix = prefix


def _key(name: str) -> str:
    return _prefix + name


def strs(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash read by a ``decode_responses=True`` client, typed as the strings it holds."""
    return {str(k): str(v) for k, v in raw.items()}


def fields(record: Mapping[str, str]) -> Mapping[Any, Any]:
    """A hash to write (redis-py types ``mapping`` with an invariant, wider key type)."""
    return record


#: How long a delivery is remembered for de-duplication (carriers retry within minutes).
DEDUPE_TTL_S = 7 * 24 * 3600


def agent(tenant: str, agent_id: str) -> str:
    """An agent's hash."""
    return _key(f"agent:{tenant}:{agent_id}")


def agents(tenant: str) -> str:
    """The set of a tenant's agent ids."""
    return _key(f"agents:{tenant}")


def agent_names(tenant: str) -> str:
    """A tenant's agent names, each mapped to its id (names are unique in a tenant)."""
    return _key(f"agentnames:{tenant}")


def number(e164: str) -> str:
    """A number's hash."""
    return _key(f"number:{e164}")


def numbers(tenant: str) -> str:
    """The set of a tenant's numbers."""
    return _key(f"numbers:{tenant}")


def call(call_id: str) -> str:
    """A call's hash."""
    return _key(f"call:{call_id}")


def call_events(call_id: str) -> str:
    """A call's event list."""
    return _key(f"call:{call_id}:events")


def call_transcript(call_id: str) -> str:
    """A call's turns in clear; read only by recordings/migrate.py, which seals them at start."""
    return _key(f"call:{call_id}:transcript")


def call_transcripts() -> str:
    """A ``SCAN`` pattern matching every :func:`call_transcript`."""
    return call_transcript("*")


def transcript_call_id(key: str) -> str:
    """The call id in a key named by :func:`call_transcript`."""
    head, tail = call_transcript("\n").split("\n")
    return key.removeprefix(head).removesuffix(tail)


def calls() -> str:
    """Every call id by creation time."""
    return _key("calls")


def carrier_call(carrier: str, carrier_call_id: str) -> str:
    """Maps a carrier's call id to ours."""
    return _key(f"carrier:{carrier}:call:{carrier_call_id}")


def dedupe(carrier: str, kind: str, key: str) -> str:
    """Marks one delivery of a webhook as applied."""
    return _key(f"dedupe:{carrier}:{kind}:{key}")


def early_status(carrier: str, carrier_call_id: str) -> str:
    """A terminal status that arrived before the call's first webhook."""
    return _key(f"early:{carrier}:{carrier_call_id}")


def tenants() -> str:
    """The set of every tenant id."""
    return _key("tenants")


def tenant(tenant_id: str) -> str:
    """A tenant's hash."""
    return _key(f"tenant:{tenant_id}")


def tenant_keys(tenant_id: str) -> str:
    """The set of a tenant's key ids."""
    return _key(f"tenant:{tenant_id}:keys")


def api_key(key_id: str) -> str:
    """An API key's hash (digest of its secret, never the secret)."""
    return _key(f"apikey:{key_id}")


def audit(tenant_id: str) -> str:
    """A tenant's audit stream."""
    return _key(f"audit:{tenant_id}")


#: The audit stream id of operator actions no tenant's log can hold (a tenant's offboarding, the
#: retention sweep); no tenant id starts with ``_``.
OPERATOR_AUDIT = "_operator"


def tenant_calls(tenant: str) -> str:
    """A tenant's call ids by creation time."""
    return _key(f"calls:{tenant}")


def limit_rate(tenant: str) -> str:
    """A tenant's outbound calls of the last minute, scored by when they were placed."""
    return _key(f"limits:{tenant}:rate")


def limit_open(tenant: str) -> str:
    """A tenant's open outbound calls, scored by the time they must be over by."""
    return _key(f"limits:{tenant}:open")


def limit_spend(tenant: str, day: str) -> str:
    """Cents a tenant reserved or spent on outbound calls on a UTC ``day`` (YYYY-MM-DD)."""
    return _key(f"limits:{tenant}:spend:{day}")


def limit_writes(tenant: str) -> str:
    """A tenant's configuration-write token bucket (tokens, time of the last write)."""
    return _key(f"limits:{tenant}:writes")


def limit_inbound(tenant: str) -> str:
    """A tenant's inbound calls in progress (``{carrier}:{carrier call id}``) by latest end."""
    return _key(f"limits:{tenant}:inbound")


def tenant_limits(tenant: str) -> str:
    """A ``SCAN`` pattern matching every ``limit_*`` key of a tenant."""
    return _key(f"limits:{tenant}:*")


def idempotency(scope: str, key: str) -> str:
    """The first response to a request with ``Idempotency-Key: key`` from credentials ``scope``."""
    return _key(f"idem:{scope}:{key}")


def idempotency_of(key_id: str) -> str:
    """A ``SCAN`` pattern matching every :func:`idempotency` slot of API key ``key_id``."""
    return _key(f"idem:{key_id}:*")


def idempotency_index(tenant: str) -> str:
    """The tenant's stored responses (slot names), each mapped to the subjects it is about."""
    return _key(f"idems:{tenant}")


def kek(tenant: str) -> str:
    """A tenant's key-encryption keys (``current`` and ``v{n}``, each wrapped)."""
    return _key(f"kek:{tenant}")


def obj(object_id: str) -> str:
    """An encrypted object's metadata."""
    return _key(f"obj:{object_id}")


def call_objects(call_id: str) -> str:
    """The set of a call's encrypted object ids."""
    return _key(f"call:{call_id}:objects")


def tenant_objects(tenant: str) -> str:
    """The set of a tenant's encrypted object ids."""
    return _key(f"objects:{tenant}")


def retention() -> str:
    """Call ids by the time they expire."""
    return _key("retention")


def nodes() -> str:
    """The live processes of the platform, scored by when their lease lapses (ms)."""
    return _key("nodes")


def node(node_id: str) -> str:
    """A process's heartbeat lease."""
    return _key(f"node:{node_id}")


def node_calls(node_id: str) -> str:
    """The calls whose media session runs on process ``node_id``."""
    return _key(f"node:{node_id}:calls")


def node_commands(node_id: str) -> str:
    """The pub/sub channel of live-call commands for process ``node_id``."""
    return _key(f"node:{node_id}:commands")


def command_reply(request_id: str) -> str:
    """The pub/sub channel on which one live-call command is answered."""
    return _key(f"reply:{request_id}")


def lease(name: str) -> str:
    """A job that one process at a time runs (the retention sweep, reaping a lost process)."""
    return _key(f"lease:{name}")


def carriers_down() -> str:
    """Carriers whose API failed, each with the time it is usable again."""
    return _key("carriers:down")


def transfer_summary(token: str) -> str:
    """A warm transfer's sealed summary audio, under its unguessable token (short TTL)."""
    return _key(f"transfer:{token}")


def tools_secret(tenant: str) -> str:
    """The tenant's secret that signs HTTP tool requests (sealed)."""
    return _key(f"tools:{tenant}:secret")


def webhook_endpoints(tenant: str) -> str:
    """The tenant's webhook endpoint ids."""
    return _key(f"webhooks:{tenant}")


def webhook_endpoint(tenant: str, endpoint_id: str) -> str:
    """One webhook endpoint of a tenant."""
    return _key(f"webhook:{tenant}:{endpoint_id}")


def delivery(delivery_id: str) -> str:
    """One webhook delivery: its sealed payload and state."""
    return _key(f"delivery:{delivery_id}")


def delivery_attempts(delivery_id: str) -> str:
    """The attempts of one delivery, in order."""
    return _key(f"delivery:{delivery_id}:attempts")


def tenant_deliveries(tenant: str) -> str:
    """The tenant's delivery ids by creation time."""
    return _key(f"deliveries:{tenant}")


def call_deliveries(call_id: str) -> str:
    """The ids of the webhook deliveries about a call (erased with it)."""
    return _key(f"call:{call_id}:deliveries")


def deliveries_due() -> str:
    """Delivery ids by the time of their next attempt (a claimed one: its lease's end)."""
    return _key("deliveries:due")


def sip_account(tenant: str, account_id: str) -> str:
    """One SIP account of a tenant (its password sealed)."""
    return _key(f"sipaccount:{tenant}:{account_id}")


def sip_accounts(tenant: str) -> str:
    """The tenant's SIP account ids."""
    return _key(f"sipaccounts:{tenant}")


def sip_accounts_all() -> str:
    """Every SIP account id with its tenant (the registration service reads it)."""
    return _key("sipaccounts")


def sip_registration(account_id: str) -> str:
    """A SIP account's registration state, written by the process that registers it."""
    return _key(f"sipreg:{account_id}")


def webrtc_token(digest: str) -> str:
    """A browser-call token, by the SHA-256 of the token (the token itself is never stored)."""
    return _key(f"webrtctoken:{digest}")
