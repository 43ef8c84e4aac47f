"""``/v1/calls``: outbound calls, the read side, and commands to live calls.

Outbound calls are placed within the tenant's limits; calls are listed and read with their
transcripts; a live call is hung up or its recording stopped wherever its media runs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException

from api import idempotency
from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem, responses
from api.schema import E164_PATTERN, PhoneNumber
from calls.records import MAX_VOICEMAIL_MESSAGE, CallRecord, VoicemailRequest
from calls.store import CallStore
from cluster.commands import (
    Action,
    CallNotLive,
    CommandBus,
    CommandError,
    CommandTimeout,
    TransferDenied,
    TransferUnavailable,
)
from routing.errors import RoutingError
from telephony.service import Telephony
from tenancy.audit import AuditLog
from tenancy.limits import Limits
from tenancy.tenants import Caller, Role, TenantStore


def _iso(value: object) -> object:
    """Only ISO 8601 date-times (pydantic alone would also read ``0.5`` as a Unix time)."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-11-26T08:00:00Z")
    return value


IsoDatetime = Annotated[dt.datetime, BeforeValidator(_iso)]
#: Calls scanned at most for one filtered page (filters are applied after the time index).
_SCAN = 1000


class VoicemailOut(BaseModel):
    """What an outbound call does on a machine, and who answered (once detection said)."""

    action: Literal["hang_up", "leave_message"]
    answered_by: Literal["human", "machine", "unknown"] | None = Field(
        description="by the carrier's answering-machine detection; null until it reports"
    )


class CallOut(BaseModel):
    """A call: parties, agent, state and the routing decision."""

    call_id: str
    direction: str
    state: str
    carrier: str
    from_number: str
    to_number: str
    agent_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    routing: dict[str, str] | None
    voicemail: VoicemailOut | None = None
    language: str | None = Field(
        None,
        description="The language the call is held in (ISO 639-1); an `auto` agent's call "
        "opens in the dialled country's and then takes the caller's. Null before it is known.",
    )

    @classmethod
    def of(cls, r: CallRecord) -> CallOut:
        """From the store's record."""
        return cls(
            call_id=r.call_id,
            direction=r.direction,
            state=r.state,
            carrier=r.carrier,
            from_number=r.from_number,
            to_number=r.to_number,
            agent_id=r.agent,
            created_at=dt.datetime.fromtimestamp(r.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(r.updated_at, dt.UTC),
            routing=dict(r.routing) if r.routing else None,
            voicemail=VoicemailOut.model_validate(
                {"action": r.voicemail_action, "answered_by": r.answered_by or None}
            )
            if r.voicemail_action
            else None,
            language=r.language or None,
        )


class HangUpOnMachine(BaseModel):
    """On a machine: end the call at once."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["hang_up"]

    def request(self) -> VoicemailRequest:
        """As the call store keeps it."""
        return VoicemailRequest(self.action)


class LeaveMessageOnMachine(BaseModel):
    """On a machine: after its greeting, the AI disclosure and ``message``, then hang up."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["leave_message"]
    message: str = Field(
        min_length=1,
        max_length=MAX_VOICEMAIL_MESSAGE,
        pattern=r"\S",
        description="what the agent says into the mailbox (not blank)",
    )

    def request(self) -> VoicemailRequest:
        """As the call store keeps it."""
        return VoicemailRequest(self.action, self.message.strip())


VoicemailIn = Annotated[HangUpOnMachine | LeaveMessageOnMachine, Field(discriminator="action")]


class CallCreate(BaseModel):
    """An outbound call from one of your numbers (its agent talks) to ``to``."""

    model_config = ConfigDict(extra="ignore")  # server-owned fields sent by a client are ignored
    from_number: PhoneNumber = Field(description="one of your numbers, E.164")
    to: PhoneNumber = Field(description="the destination, E.164")
    voicemail: VoicemailIn | None = Field(
        default=None,
        description="ask the carrier's answering-machine detection (billed by the carrier); "
        "absent: no detection",
    )


class EventOut(BaseModel):
    """A lifecycle event."""

    type: str
    at: dt.datetime
    data: dict[str, Any]


class CallDetail(CallOut):
    """A call with its lifecycle events."""

    events: list[EventOut]


class CallPage(BaseModel):
    """Calls, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[CallOut]
    next_cursor: str | None


class TurnOut(BaseModel):
    """One utterance."""

    role: str
    text: str
    at: dt.datetime
    interrupted: bool


class Transcript(BaseModel):
    """What was said in a call."""

    call_id: str
    turns: list[TurnOut]


class CommandOut(BaseModel):
    """What a live-call command did."""

    call_id: str
    action: Literal["hangup", "stop_recording", "transfer"]
    result: Literal["hung_up", "recording_stopped", "not_recording", "transferring"] = Field(
        description="hung_up: the agent says its farewell and the call ends; "
        "recording_stopped: recording stopped and what was captured deleted; "
        "not_recording: the call records nothing (any more); "
        "transferring: the transfer was admitted and the hand-over runs in the call (its "
        "outcome: the call's transferred/transfer_refused events, the call.transferred webhook)"
    )


#: The HTTP status of each live-call command error (any other: 502).
_COMMAND_STATUS: dict[type[CommandError], int] = {
    CallNotLive: 409,
    TransferUnavailable: 409,
    TransferDenied: 403,
    CommandTimeout: 504,
}


async def tenant_call(calls: CallStore, caller: Caller, call_id: str) -> CallRecord:
    """The caller's tenant's call ``call_id``; another tenant's is the same 404 as none."""
    record = await calls.get(call_id)
    if record is None or record.tenant != caller.tenant_id:
        raise HTTPException(404, "no such call")
    return record


def router(
    *,
    tenants: TenantStore,
    calls: CallStore,
    audit: AuditLog,
    telephony: Telephony,
    default_limits: Limits,
    subject_ref: Callable[[str, str], str],
    commands: CommandBus,
) -> APIRouter:
    """``/v1/calls``.

    Outbound calls go through ``telephony`` within the tenant's limits (``default_limits``
    for a tenant without its own); ``subject_ref(tenant, number)`` names a called number in
    the audit log; ``commands`` reach a live call on whichever process holds it.
    """
    r = APIRouter(prefix="/v1/calls", tags=["calls"], responses=API_ERRORS)

    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    editor = Depends(tenant_key(tenants, Role.EDITOR))

    async def find(caller: Caller, call_id: str) -> CallRecord:
        return await tenant_call(calls, caller, call_id)

    @r.post("", status_code=201, response_model=CallOut)
    async def place(body: CallCreate, response: Response, caller: Caller = editor) -> CallOut:
        """Place an outbound call, routed and within your limits (429 and Retry-After beyond).

        With ``voicemail`` the carrier detects a machine: ``hang_up`` ends the call at once,
        ``leave_message`` leaves the message after the greeting; ``answered_by`` shows the result.
        """
        limits = await tenants.limits(caller.tenant_id, default_limits)
        vm = body.voicemail.request() if body.voicemail is not None else None
        placed = await telephony.place_call(
            body.from_number, body.to, caller.tenant_id, limits, voicemail=vm
        )
        destination = subject_ref(caller.tenant_id, body.to)
        idempotency.about(caller.tenant_id, destination)
        await audit.record(
            caller,
            "call.place",
            placed.call_id,
            to=destination,
            **placed.decision.as_metadata(),
            **({"voicemail": vm.action} if vm is not None else {}),
        )
        record = await calls.get(placed.call_id)
        if record is None:  # written before the carrier was asked; gone only if Redis lost it
            raise HTTPException(503, "the call was placed but its record is not readable yet")
        response.headers["Location"] = f"/v1/calls/{placed.call_id}"
        return CallOut.of(record)

    @r.get("", response_model=CallPage)
    async def list_calls(
        caller: Caller = viewer,
        number: str | None = Query(
            default=None, description="either party, E.164", pattern=E164_PATTERN
        ),
        direction: Literal["inbound", "outbound"] | None = None,
        status: str | None = Query(default=None, max_length=20),
        since: IsoDatetime | None = None,
        until: IsoDatetime | None = None,
        cursor: str | None = Query(default=None, pattern=r"^\d+(\.\d+)?$"),
        limit: int = Query(default=50, ge=1, le=200),
    ) -> CallPage:
        """Your tenant's calls, newest first, filtered."""
        before = float(cursor) if cursor else (until.timestamp() if until else None)
        items: list[CallRecord] = []
        scanned = 0
        while len(items) < limit and scanned < _SCAN:
            batch = await calls.page(caller.tenant_id, before, limit)
            if not batch:
                break
            scanned += len(batch)
            before = batch[-1].created_at
            for rec in batch:
                if since and rec.created_at < since.timestamp():
                    batch = []
                    break
                if number and not calls.involves(rec, number):
                    continue
                if (direction and rec.direction != direction) or (status and rec.state != status):
                    continue
                items.append(rec)
            if not batch:
                break
        items = items[:limit]
        more = len(items) == limit
        return CallPage(
            items=[CallOut.of(i) for i in items],
            next_cursor=repr(items[-1].created_at) if more else None,
        )

    @r.get("/{call_id}", response_model=CallDetail)
    async def read(call_id: str, caller: Caller = viewer) -> CallDetail:
        """One call with its lifecycle events and routing metadata."""
        record = await find(caller, call_id)
        events = [
            EventOut(
                type=str(e.type), at=dt.datetime.fromtimestamp(e.at, dt.UTC), data=dict(e.data)
            )
            for e in await calls.events(call_id)
        ]
        return CallDetail(**CallOut.of(record).model_dump(), events=events)

    async def transferable(record: CallRecord) -> None:
        """:class:`TransferUnavailable` unless the call's agent has a transfer number."""
        try:
            agent = await telephony.directory.get_agent_by_id(record.agent, record.tenant)
        except RoutingError as e:
            raise TransferUnavailable("the call's agent no longer exists") from e
        if not agent.transfer_number:
            raise TransferUnavailable("the call's agent has no transfer number")

    async def command(caller: Caller, call_id: str, action: Action) -> CommandOut:
        """Run ``action`` on the caller's live call; the outcome is audited."""
        record = await find(caller, call_id)
        try:
            if action is Action.TRANSFER:
                await transferable(record)
            if record.state.is_final:
                raise CallNotLive("the call is over")
            result = await commands.send(call_id, action)
        except CommandError as e:
            status = 502 if e.code == "carrier_failed" else _COMMAND_STATUS.get(type(e), 502)
            if action is Action.TRANSFER:
                await audit.record(caller, "call.transfer", call_id, result=e.code)
            raise ApiProblem(status, e.code, str(e)) from e
        await audit.record(caller, f"call.{action}", call_id, result=result)
        return CommandOut.model_validate(
            {"call_id": call_id, "action": action.value, "result": result}
        )

    live_errors = responses(409, 504)

    @r.post("/{call_id}/hangup", response_model=CommandOut, responses=live_errors)
    async def hang_up(call_id: str, caller: Caller = editor) -> CommandOut:
        """End a live call: the agent says its farewell and the carrier hangs up.

        409 ``call_not_live`` when the call is over or no process holds it; 504
        ``command_timeout`` when the process holding it does not answer in time.
        """
        return await command(caller, call_id, Action.HANGUP)

    @r.post("/{call_id}/stop-recording", response_model=CommandOut, responses=live_errors)
    async def stop_recording(call_id: str, caller: Caller = editor) -> CommandOut:
        """Stop recording a live call and delete what was captured.

        As on the caller's objection; ``not_recording`` when the call records nothing.
        """
        return await command(caller, call_id, Action.STOP_RECORDING)

    @r.post(
        "/{call_id}/transfer",
        response_model=CommandOut,
        status_code=202,
        responses=responses(403, 409, 502, 504),
    )
    async def transfer(call_id: str, caller: Caller = editor) -> CommandOut:
        """Hand the caller to the agent's transfer number (the agent says a short phrase first).

        202 ``transferring`` once the transfer is admitted: the hold phrase, the summary and
        the carrier's hand-over then run in the call; the outcome is in the call's events
        (``transferred``, or ``transfer_refused`` with ``carrier_failed``) and the
        ``call.transferred`` webhook. 403 with the refusal's code when routing
        (``route_refused``: an EU number on a US carrier; ``destination_refused``: premium and
        other restricted classes), the tenant's outbound limits (``limit_exceeded``) or a
        failed check (``transfer_failed``) refuse it; 409 ``transfer_unavailable`` when the
        agent has no transfer number or the call is ending, ``call_not_live`` when the call is
        over.
        """
        return await command(caller, call_id, Action.TRANSFER)

    @r.get("/{call_id}/transcript", response_model=Transcript)
    async def transcript(call_id: str, caller: Caller = viewer) -> Transcript:
        """What was said; every read is written to the audit log."""
        await find(caller, call_id)
        turns = await calls.transcript(call_id)
        await audit.record(caller, "transcript.read", call_id)
        return Transcript(
            call_id=call_id,
            turns=[
                TurnOut(**(asdict(t) | {"at": dt.datetime.fromtimestamp(t.at, dt.UTC)}))
                for t in turns
            ],
        )

    return r
