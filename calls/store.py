"""The call store: each call's record and lifecycle events in Redis (words only as turn lengths)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from calls import voicemail
from calls.errors import CallStoreIncomplete, UnknownCallState
from calls.events import CallEvent, CallEventType
from calls.records import (
    CallRecord,
    Opened,
    Reservation,
    Turn,
    Voicemail,
    VoicemailRequest,
    expiry,
    new_call_id,
)
from calls.state import CallState
from carriers.base import InboundCall, MachineDetection, StatusUpdate
from recordings.keyring import KeyRing
from recordings.objects import EncryptedObjects
from recordings.subjects import PARTIES, SEALED, UNREADABLE, Parties
from recordings.transcripts import read_turns
from routing.directory import Route
from store import keys

log = logging.getLogger(__name__)

# Records an inbound call once. A repeat returns the first call's id (its state is read after);
# a final status heard before the call (KEYS[6]) that the record did not account for creates
# nothing and is returned instead.
_OPEN = """
local early = redis.call('GET', KEYS[6])
if early and early ~= ARGV[6] and redis.call('EXISTS', KEYS[1]) == 0 then
  return {'', 0, early}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  local fields = {}
  for k, v in pairs(cjson.decode(ARGV[5])) do
    fields[#fields + 1] = k
    fields[#fields + 1] = v
  end
  redis.call('HSET', KEYS[2], unpack(fields))
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  redis.call('RPUSH', KEYS[4], ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
  if KEYS[7] then redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1]) end
  return {ARGV[1], 1, ''}
end
return {redis.call('GET', KEYS[1]), 0, ''}
"""
# Moves a call to a state of higher rank (ARGV[3]: each state's rank).
_ADVANCE = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return 0 end
local ranks = cjson.decode(ARGV[3])
if (ranks[ARGV[1]] or -1) > (ranks[cur] or -1) then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
  -- when the call was answered: the platform's own measure of its length
  if ARGV[1] == ARGV[4] then redis.call('HSETNX', KEYS[1], 'answered_at', ARGV[2]) end
  return 1
end
return 0
"""
_RANKS = json.dumps({str(s): s.rank for s in CallState})
# Like _ADVANCE, and appends the event ARGV[4] to KEYS[2] when the state moved.
_END = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return 0 end
local ranks = cjson.decode(ARGV[3])
if (ranks[ARGV[1]] or -1) > (ranks[cur] or -1) then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
  redis.call('RPUSH', KEYS[2], ARGV[4])
  return 1
end
return 0
"""
# Names process ARGV[1] as the holder of the call KEYS[1], if the call exists.
_HOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'node', ARGV[1])
return 1
"""
# Sets field ARGV[1] of KEYS[1] to ARGV[2] if the record exists (never recreates a deleted one).
_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Forgets the holder of KEYS[1] if it is still ARGV[1].
_LET_GO = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  return redis.call('HDEL', KEYS[1], 'node')
end
return 0
"""
_SETTLE = """
if redis.call('HSETNX', KEYS[1], 'settled_at', ARGV[1]) == 0 then return -1 end
redis.call('ZREM', KEYS[2], ARGV[2])
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved_cents') or '0')
local used = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'cost_cents', used)
-- The day's counter holds the reservation: it becomes what the call cost, above the
-- reservation too. A counter that expired belongs to a day long over.
if used ~= reserved and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[3], used - reserved)
end
return used
"""


# Like _SETTLE for the transfer leg of a call: its own reservation, member and fields.
_SETTLE_TRANSFER = """
if redis.call('HGET', KEYS[1], 'transfer_reserved_cents') == false then return -1 end
if redis.call('HSETNX', KEYS[1], 'transfer_settled_at', ARGV[1]) == 0 then return -1 end
redis.call('ZREM', KEYS[2], ARGV[2])
local reserved = tonumber(redis.call('HGET', KEYS[1], 'transfer_reserved_cents'))
local used = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'transfer_cost_cents', used)
if used ~= reserved and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[3], used - reserved)
end
return used
"""


def transfer_member(call_id: str) -> str:
    """How a call's transfer leg is counted among the tenant's open outbound calls."""
    return f"{call_id}:transfer"


def state_of(status: str) -> CallState:
    """The call state a carrier's status names; :class:`UnknownCallState` if none."""
    try:
        return CallState(status)
    except ValueError:
        raise UnknownCallState(f"unknown call state {status!r}") from None


def _is_final(status: str) -> bool:
    """Whether a carrier's status ends the call (an unknown status does not)."""
    return status in _FINAL


_FINAL = {s.value for s in CallState.final()}


def _inbound_record(
    call_id: str,
    inbound: InboundCall,
    route: Route | None,
    now: float,
    routing: Mapping[str, str] | None,
    refusal: str | None,
    early: CallState | None,
    parties: Mapping[str, str],
) -> tuple[dict[str, str], CallEvent]:
    """A new inbound call's hash and first event (``early``: a final status heard before it).

    ``parties`` are the parties' fields as stored: sealed, with their digests.
    """
    state = CallState.RINGING if route and not refusal else CallState.REJECTED
    if early is not None and early.is_final:
        state = early
    record = {
        "call_id": call_id,
        "carrier": inbound.carrier,
        "carrier_call_id": inbound.carrier_call_id,
        "tenant": route.tenant if route else "",
        "agent": route.agent.agent_id if route else "",
        "agent_name": route.agent.name if route else "",
        **parties,
        "direction": "inbound",
        "state": state,
        "created_at": str(now),
        "updated_at": str(now),
        "expires_at": repr(expiry(now, route.agent.retention_days if route else None)),
    }
    record.update({f"routing_{k}": v for k, v in (routing or {}).items()})
    answered = state is CallState.RINGING
    data: dict[str, Any] = {"carrier": inbound.carrier, "to": parties["to_ref"]}
    if routing:
        data["routing"] = dict(routing)
    if not answered:
        data["reason"] = refusal or (
            f"the call was already {state}" if route else "no agent answers this number"
        )
    kind = CallEventType.INBOUND if answered else CallEventType.REJECTED
    return record, CallEvent(kind, call_id, now, data)


class CallStore:
    """Reads and writes calls; every multi-key write is one MULTI/EXEC."""

    def __init__(
        self,
        redis: Redis,
        objects: EncryptedObjects | None = None,
        *,
        keyring: KeyRing | None = None,
    ) -> None:
        """Use ``redis`` (decode_responses=True); transcripts are read from ``objects``.

        Calls' parties are sealed and opened with ``keyring`` (by default that of ``objects``);
        a store with neither reads them as :data:`~recordings.subjects.UNREADABLE` and cannot
        record a call.
        """
        self.redis = redis
        self.objects = objects
        ring = keyring or (objects.keyring if objects is not None else None)
        self.parties = Parties(ring) if ring is not None else None
        self._advance = redis.register_script(_ADVANCE)
        self._open = redis.register_script(_OPEN)
        self._settle = redis.register_script(_SETTLE)
        self._settle_transfer = redis.register_script(_SETTLE_TRANSFER)
        self._end = redis.register_script(_END)
        self._hold = redis.register_script(_HOLD)
        self._let_go = redis.register_script(_LET_GO)
        self._set_if_exists = redis.register_script(_SET_IF_EXISTS)
        #: Told ``(call_id, now, carrier status)`` once a status callback ended the call
        #: (the platform queues the tenant's ``call.ended`` webhook there); never raises.
        self.on_final: Callable[[str, float, str], Awaitable[None]] | None = None
        self._machine = redis.register_script(voicemail.MERGE)

    async def open_inbound(
        self,
        inbound: InboundCall,
        route: Route | None,
        now: float,
        routing: Mapping[str, str] | None = None,
        refusal: str | None = None,
    ) -> Opened:
        """Record an inbound call once; a repeat returns the first call's id and state.

        ``routing`` is the router's decision (stored with the call); ``refusal`` why the call is
        not answered. A terminal status that arrived before the call itself (carriers do not
        order their webhooks) is applied at once: such a call is created already over.
        """
        call_id = new_call_id()
        mapping = keys.carrier_call(inbound.carrier, inbound.carrier_call_id)
        index = [keys.tenant_calls(route.tenant)] if route else []
        tenant = route.tenant if route else ""
        parties = await self._seal(tenant, call_id, inbound.from_number, inbound.to_number)
        early_key = keys.early_status(inbound.carrier, inbound.carrier_call_id)
        # One script: a concurrent repeat either creates the call or sees it complete. It reads
        # the early status too: when there is one the record did not account for, it creates
        # nothing and says which, and the record is made again (rare: one more round trip).
        early: CallState | None = None
        while True:
            record, event = _inbound_record(
                call_id, inbound, route, now, routing, refusal, early, parties
            )
            script_keys = [
                mapping,
                keys.call(call_id),
                keys.calls(),
                keys.call_events(call_id),
                keys.retention(),
                early_key,
                *index,
            ]
            args = [
                call_id,
                str(now),
                event.to_json(),
                record["expires_at"],
                json.dumps(record),
                str(early or ""),
            ]
            got, created, heard = await self._open(keys=script_keys, args=args)
            if not got:
                early = state_of(str(heard))
            elif created:
                return Opened(str(got), True, CallState(record["state"]))
            else:  # a repeat: the first call's state, if its record is still there
                first = await self.redis.hget(keys.call(str(got)), "state")
                return Opened(str(got), False, CallState(str(first)) if first else None)

    async def open_outbound(
        self,
        source: Route,
        destination: str,
        now: float,
        routing: Mapping[str, str],
        *,
        call_id: str | None = None,
        reservation: Reservation | None = None,
        voicemail_request: VoicemailRequest | None = None,
    ) -> str:
        """Record an outbound call before the carrier is asked to place it; its id.

        ``reservation`` is what the call holds of its tenant's daily spend cap, refunded down
        to what the call cost by :meth:`settle` when it ends. ``voicemail_request`` is what to
        do on a machine (its message sealed under the tenant's key).
        """
        call_id = call_id or new_call_id()
        held = reservation.as_fields() if reservation else {}
        parties = await self._seal(source.tenant, call_id, source.number, destination)
        if voicemail_request is not None and self.parties is not None:
            held = held | await voicemail.sealed_fields(
                self.parties.keyring, source.tenant, call_id, voicemail_request
            )
        record = {
            "call_id": call_id,
            "carrier": routing["carrier"],
            "carrier_call_id": "",
            "tenant": source.tenant,
            "agent": source.agent.agent_id,
            "agent_name": source.agent.name,
            **parties,
            "direction": "outbound",
            "state": CallState.QUEUED.value,
            "created_at": str(now),
            "updated_at": str(now),
            "expires_at": repr(expiry(now, source.agent.retention_days)),
            **{f"routing_{k}": v for k, v in routing.items()},
            **held,
        }
        data = {"to": parties["to_ref"], "routing": dict(routing)}
        event = CallEvent(CallEventType.OUTBOUND, call_id, now, data)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.call(call_id), mapping=keys.fields(record))
            p.zadd(keys.calls(), {call_id: now})
            p.zadd(keys.tenant_calls(source.tenant), {call_id: now})
            p.zadd(keys.retention(), {call_id: float(record["expires_at"])})
            p.rpush(keys.call_events(call_id), event.to_json())
            await p.execute()
        return call_id

    async def voicemail(self, call_id: str) -> Voicemail | None:
        """The call's voicemail choice and detection so far, its message opened; or ``None``."""
        if self.parties is None:
            raise CallStoreIncomplete("this call store has no key ring to open messages with")
        raw = keys.strs(await self.redis.hgetall(keys.call(call_id)))
        return await voicemail.opened(self.parties.keyring, raw) if raw else None

    async def machine_detected(
        self, call_id: str, detection: MachineDetection, now: float
    ) -> tuple[CallState, Voicemail] | None:
        """Fold a detection result into the call and record a ``voicemail`` event.

        Returns the call's state and its merged voicemail state (message not opened), or
        ``None`` when there is no such call.
        """
        action = await self.redis.hget(keys.call(call_id), voicemail.ACTION)
        data: dict[str, Any] = {
            "answered_by": str(detection.answered_by),
            "action": str(action or "none"),
            "result": detection.result,
            "greeting_ended": detection.greeting_ended,
        }
        event = CallEvent(CallEventType.VOICEMAIL, call_id, now, data)
        got = await self._machine(
            keys=[keys.call(call_id), keys.call_events(call_id)],
            args=[
                str(detection.answered_by),
                detection.result,
                "1" if detection.greeting_ended else "0",
                "1" if detection.final else "0",
                event.to_json(),
            ],
        )
        if not got:
            return None
        state, who, ended, final = (str(v) for v in got)
        merged = Voicemail(str(action or ""), "", who, detection.result, ended == "1", final == "1")
        return state_of(state), merged

    async def page(self, tenant: str, before: float | None, limit: int) -> list[CallRecord]:
        """The tenant's calls, newest first, created strictly before ``before``."""
        top = f"({before}" if before is not None else "+inf"
        ids = await self.redis.zrevrangebyscore(
            keys.tenant_calls(tenant), top, "-inf", start=0, num=limit
        )
        records = [await self.get(str(i)) for i in ids]
        return [r for r in records if r is not None]

    async def attach_carrier_call(self, call_id: str, carrier: str, carrier_call_id: str) -> None:
        """Link our outbound call to the carrier's id once the carrier accepted it."""
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.call(call_id), "carrier_call_id", carrier_call_id)
            p.set(keys.carrier_call(carrier, carrier_call_id), call_id)
            await p.execute()

    async def set_language(self, call_id: str, language: str) -> None:
        """Note the language the call is held in (once the call's record exists)."""
        await self._set_if_exists(keys=[keys.call(call_id)], args=["language", language])

    async def get(self, call_id: str) -> CallRecord | None:
        """A call's record with its parties opened, or ``None``."""
        raw = keys.strs(await self.redis.hgetall(keys.call(call_id)))
        if not raw:
            return None
        if self.parties is not None:
            raw |= await self.parties.open(raw)
        else:
            raw |= {f: UNREADABLE for f in PARTIES if raw.get(f, "").startswith(SEALED)}
        return CallRecord.from_redis(raw)

    def involves(self, record: CallRecord, number: str) -> bool:
        """Whether ``number`` (in any form) is a party of ``record``, matched by digest."""
        if self.parties is None:
            raise CallStoreIncomplete("this call store has no key ring to digest numbers with")
        fields = {
            "from_ref": record.from_ref,
            "to_ref": record.to_ref,
            "from_number": record.from_number,
            "to_number": record.to_number,
        }
        return self.parties.involves(fields, record.tenant, number)

    async def _seal(self, tenant: str, call_id: str, from_: str, to: str) -> dict[str, str]:
        """The parties' fields of a new call: sealed under the tenant's key, with digests."""
        if self.parties is None:
            raise CallStoreIncomplete(
                "this call store has no key ring: it cannot record a call's parties"
            )
        return await self.parties.seal(tenant, call_id, {"from_number": from_, "to_number": to})

    async def claim_stream(self, call_id: str, stream_id: str) -> bool:
        """Attach the media stream ``stream_id`` to the call; ``False`` if one already is."""
        return bool(await self.redis.hsetnx(keys.call(call_id), "stream_id", stream_id))

    async def by_carrier_id(self, carrier: str, carrier_call_id: str) -> str | None:
        """Our call id for a carrier's call id."""
        value = await self.redis.get(keys.carrier_call(carrier, carrier_call_id))
        return str(value) if value else None

    async def add_event(self, event: CallEvent) -> None:
        """Append a lifecycle event."""
        await self.redis.rpush(keys.call_events(event.call_id), event.to_json())

    async def events(self, call_id: str) -> list[CallEvent]:
        """The call's events in arrival order."""
        return [
            CallEvent.from_json(r)
            for r in await self.redis.lrange(keys.call_events(call_id), 0, -1)
        ]

    async def add_turn(self, call_id: str, turn: Turn) -> None:
        """Record that a turn was spoken: an event with its length, never its words.

        The words go only to the encrypted transcript (``recordings.transcripts.TranscriptLog``).
        """
        kind = CallEventType.CALLER_TURN if turn.role == "caller" else CallEventType.AGENT_TURN
        data: dict[str, Any] = {"chars": len(turn.text)}
        if turn.interrupted:
            data["interrupted"] = True
        await self.add_event(CallEvent(kind, call_id, turn.at, data))

    async def transcript(self, call_id: str) -> list[Turn]:
        """The call's turns in order, decrypted."""
        turns, _ = await self.transcript_state(call_id)
        return turns

    async def transcript_state(self, call_id: str) -> tuple[list[Turn], bool]:
        """The call's turns, decrypted, and whether the transcript is finalized (complete)."""
        if self.objects is None:
            raise CallStoreIncomplete(
                "this call store has no encrypted store to read transcripts from"
            )
        turns, complete = await read_turns(self.objects, call_id)
        return [Turn(t.role, t.text, t.at, t.interrupted) for t in turns], complete

    async def advance(self, call_id: str, state: CallState, now: float) -> bool:
        """Move the call to ``state`` if that is progress; ``True`` if it moved."""
        state = state_of(state)
        moved = await self._advance(
            keys=[keys.call(call_id)],
            args=[state.value, str(now), _RANKS, CallState.IN_PROGRESS.value],
        )
        return bool(moved)

    async def end(self, call_id: str, state: CallState, event: CallEvent) -> bool:
        """Move the call to ``state`` and record ``event``, both only if that is progress."""
        moved = await self._end(
            keys=[keys.call(call_id), keys.call_events(call_id)],
            args=[state_of(state).value, str(event.at), _RANKS, event.to_json()],
        )
        if moved and self.on_final is not None and state_of(state).is_final:
            await self.on_final(call_id, event.at, state_of(state).value)
        return bool(moved)

    async def hold(self, call_id: str, node_id: str) -> bool:
        """Record that process ``node_id`` runs the call's media; ``False`` if no such call."""
        return bool(await self._hold(keys=[keys.call(call_id)], args=[node_id]))

    async def let_go(self, call_id: str, node_id: str) -> None:
        """Process ``node_id`` no longer runs the call's media (if it was the holder)."""
        await self._let_go(keys=[keys.call(call_id)], args=[node_id])

    async def holder(self, call_id: str) -> str | None:
        """The process running the media of a call that is not over, or ``None``."""
        state, node = await self.redis.hmget(keys.call(call_id), ["state", "node"])
        if not state or not node or _is_final(str(state)):
            return None
        return str(node)

    async def first_delivery(self, carrier: str, kind: str, key: str) -> bool:
        """Mark a carrier's delivery as applied; ``False`` if it already was (a repeat)."""
        marker = keys.dedupe(carrier, kind, key)
        return bool(await self.redis.set(marker, "1", nx=True, ex=keys.DEDUPE_TTL_S))

    async def forget_delivery(self, carrier: str, kind: str, key: str) -> None:
        """Unmark a delivery whose handling failed, so that the carrier's retry applies it."""
        await self.redis.delete(keys.dedupe(carrier, kind, key))

    async def apply_status(self, carrier: str, update: StatusUpdate, now: float) -> str | None:
        """Apply a status callback exactly once; the call id, or ``None`` if duplicate/unknown."""
        call_id = await self.by_carrier_id(carrier, update.carrier_call_id)
        if call_id is None:
            if _is_final(update.status):  # ended before we heard it start
                early = keys.early_status(carrier, update.carrier_call_id)
                await self.redis.set(early, update.status, ex=keys.DEDUPE_TTL_S)
            return None
        delivery = f"{update.carrier_call_id}:{update.status}:{update.sequence}"
        if not await self.first_delivery(carrier, "status", delivery):
            return None
        moved = await self.advance(call_id, state_of(update.status), now)
        data: dict[str, Any] = {"status": update.status, "applied": moved}
        if update.sequence is not None:
            data["sequence"] = update.sequence
        if update.duration_s is not None:
            data["duration_s"] = update.duration_s
        await self.add_event(CallEvent(CallEventType.STATUS, call_id, now, data))
        if _is_final(update.status):
            await self.add_event(
                CallEvent(CallEventType.ENDED, call_id, now, {"status": update.status})
            )
            talked = update.duration_s if update.status == CallState.COMPLETED else 0.0
            await self.settle(call_id, now, talked)
            await self.settle_transfer(call_id, now)
            if moved and self.on_final is not None:
                await self.on_final(call_id, now, update.status)
        return call_id

    async def settle(self, call_id: str, now: float, duration_s: float | None) -> int | None:
        """Charge a finished outbound call what it used, against its reservation (once).

        ``duration_s`` is the carrier's billed duration; ``None`` when it did not say (the
        time since the call was answered is charged then, or since it was placed). The cost
        replaces the reservation in the day's spend: less gives the rest back, more is added,
        so the next admission sees it. Returns the cost in cents, or ``None`` if the call
        held no reservation or was settled already.
        """
        raw = keys.strs(await self.redis.hgetall(keys.call(call_id)))
        if not raw.get("reserved_cents"):
            return None
        if duration_s is None:
            since = raw.get("answered_at") or raw["created_at"]
            duration_s = max(0.0, now - float(since))
        rate = int(raw.get("cents_per_minute") or 0)
        used = rate * math.ceil(duration_s / 60)
        if used > int(raw["reserved_cents"]):
            log.warning(
                "call cost more than its reservation",
                extra={
                    "call_id": call_id,
                    "cost_cents": used,
                    "reserved_cents": raw["reserved_cents"],
                },
            )
        got = await self._settle(
            keys=[
                keys.call(call_id),
                keys.limit_open(raw["tenant"]),
                keys.limit_spend(raw["tenant"], raw["reserved_day"]),
            ],
            args=[str(now), call_id, used],
        )
        return None if int(got) < 0 else int(got)

    async def reserve_transfer(self, call_id: str, reservation: Reservation) -> None:
        """Note what the call's transfer leg holds of the tenant's daily spend cap."""
        fields = {f"transfer_{k}": v for k, v in reservation.as_fields().items()}
        await self.redis.hset(keys.call(call_id), mapping=keys.fields(fields))

    async def transferred(self, call_id: str, now: float) -> None:
        """The carrier took the transfer at ``now``: its leg is charged from then."""
        await self.redis.hset(keys.call(call_id), "transferred_at", repr(now))

    async def settle_transfer(self, call_id: str, now: float) -> int | None:
        """Charge the call's transfer leg, from the hand-over to ``now``, once.

        Nothing is charged if it was never handed over. The cost in cents, or ``None`` when
        there was no reservation or it was settled already.
        """
        raw = keys.strs(await self.redis.hgetall(keys.call(call_id)))
        if not raw.get("transfer_reserved_cents"):
            return None
        since = raw.get("transferred_at")
        seconds = max(0.0, now - float(since)) if since else 0.0
        used = int(raw.get("transfer_cents_per_minute") or 0) * math.ceil(seconds / 60)
        got = await self._settle_transfer(
            keys=[
                keys.call(call_id),
                keys.limit_open(raw["tenant"]),
                keys.limit_spend(raw["tenant"], raw["transfer_reserved_day"]),
            ],
            args=[str(now), transfer_member(call_id), used],
        )
        return None if int(got) < 0 else int(got)
