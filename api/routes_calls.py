"""``/v1/calls``, the read side: list (filters, cursor), one call, its transcript (audited)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api.auth import Caller, tenant_key
from api.platform import Platform
from api.tenants import Role
from voice.calls import CallRecord

#: Calls scanned at most for one filtered page (filters are applied after the time index).
_SCAN = 1000


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

    @classmethod
    def of(cls, r: CallRecord) -> CallOut:
        """From the store's record."""
        return cls(
            call_id=r.call_id, direction=r.direction, state=r.state, carrier=r.carrier,
            from_number=r.from_number, to_number=r.to_number, agent_id=r.agent,
            created_at=dt.datetime.fromtimestamp(r.created_at, dt.UTC),
            updated_at=dt.datetime.fromtimestamp(r.updated_at, dt.UTC),
            routing=dict(r.routing) if r.routing else None,
        )  # fmt: skip


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


def router(platform: Platform) -> APIRouter:
    """Routes bound to ``platform``."""
    r = APIRouter(prefix="/v1/calls", tags=["calls"])

    viewer = Depends(tenant_key(platform.tenants, Role.VIEWER))

    async def find(caller: Caller, call_id: str) -> CallRecord:
        record = await platform.calls.get(call_id)
        if record is None or record.tenant != caller.tenant_id:
            raise HTTPException(404, "no such call")
        return record

    @r.get("", response_model=CallPage)
    async def list_calls(
        caller: Caller = viewer,
        number: str | None = Query(default=None, description="either party, E.164"),
        direction: Literal["inbound", "outbound"] | None = None,
        status: str | None = Query(default=None, max_length=20),
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: str | None = Query(default=None, pattern=r"^\d+(\.\d+)?$"),
        limit: int = Query(default=50, ge=1, le=200),
    ) -> CallPage:
        """Your tenant's calls, newest first, filtered."""
        before = float(cursor) if cursor else (until.timestamp() if until else None)
        items: list[CallRecord] = []
        scanned = 0
        while len(items) < limit and scanned < _SCAN:
            batch = await platform.calls.page(caller.tenant_id, before, limit)
            if not batch:
                break
            scanned += len(batch)
            before = batch[-1].created_at
            for rec in batch:
                if since and rec.created_at < since.timestamp():
                    batch = []
                    break
                if number and number not in (rec.from_number, rec.to_number):
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
            for e in await platform.calls.events(call_id)
        ]
        return CallDetail(**CallOut.of(record).model_dump(), events=events)

    @r.get("/{call_id}/transcript", response_model=Transcript)
    async def transcript(call_id: str, caller: Caller = viewer) -> Transcript:
        """What was said; every read is written to the audit log."""
        await find(caller, call_id)
        turns = await platform.calls.transcript(call_id)
        await platform.audit.record(caller, "transcript.read", call_id)
        return Transcript(
            call_id=call_id,
            turns=[
                TurnOut(**(asdict(t) | {"at": dt.datetime.fromtimestamp(t.at, dt.UTC)}))
                for t in turns
            ],
        )

    return r
