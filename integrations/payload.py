"""What a webhook delivery carries: the event's envelope, and ``call.ended``'s whole story.

Every body is ``{"type", "timestamp", "data"}`` (the Standard Webhooks envelope). ``call.ended``
is built at its first attempt, from what the platform stored: state, timings, routing,
direction, the parties' numbers and, where the agent keeps transcripts, the transcript, a
summary and the fields of the agent's ``extraction_schema``. The numbers are sent whole: the
call is the customer's, who can read them through the API anyway and needs them to call back;
the body is kept sealed in Redis and sent only over HTTPS (outside development), signed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from calls.store import CallStore
from integrations.summary import CallDigest, Summarizer
from routing.directory import Directory
from routing.errors import AgentNotFound
from store import keys

log = logging.getLogger(__name__)


def iso(at: float | None) -> str | None:
    """``at`` as an ISO 8601 UTC time, or ``None``."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat() if at is not None else None


def envelope(event: str, created_at: float, data: Mapping[str, Any]) -> bytes:
    """A delivery's JSON body."""
    body = {"type": event, "timestamp": iso(created_at), "data": dict(data)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Payloads:
    """Builds delivery bodies from the stored call (one for the process)."""

    def __init__(
        self,
        calls: CallStore,
        directory: Directory,
        summarizer: Summarizer | None,
        *,
        settle_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Read calls and agents; ask ``summarizer`` for summaries (``None``: none).

        ``call.ended`` waits up to ``settle_s`` after the call ended for its transcript to be
        complete (the last turns are still being written); then it is built with what is there.
        """
        self.calls = calls
        self.directory = directory
        self.summarizer = summarizer
        self.settle_s = settle_s
        self._clock = clock

    async def build(
        self, tenant: str, event: str, call_id: str, data: Mapping[str, Any], created_at: float
    ) -> bytes | None:
        """The body of a delivery of ``event`` queued at ``created_at`` with ``data``.

        ``None``: not yet (``call.ended`` of a call whose transcript is still being written).
        Never raises: what cannot be read is left out, with the reason in the body.
        """
        if event == "call.ended":
            try:
                built = await self.call_ended(tenant, call_id, data)
            except Exception as e:  # the customer still hears that the call ended
                log.exception(
                    "call.ended built without the stored call", extra={"call_id": call_id}
                )
                built = {
                    "call_id": call_id,
                    **data,
                    "error": f"call not readable ({type(e).__name__})",
                }
            if built is None:
                return None
            data = built
        else:
            data = {"call_id": call_id, **data}
        return envelope(event, created_at, data)

    async def call_ended(
        self, tenant: str, call_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """``call.ended``'s data: the call as stored, its transcript, summary and fields.

        ``None`` while the transcript is incomplete and the call ended under ``settle_s`` ago.
        """
        record = await self.calls.get(call_id)
        if record is None or record.tenant != tenant:
            return {"call_id": call_id, **data}
        raw = keys.strs(await self.calls.redis.hgetall(keys.call(call_id)))
        answered = float(raw["answered_at"]) if raw.get("answered_at") else None
        ended = float(data["ended_at"]) if data.get("ended_at") else record.updated_at
        out: dict[str, Any] = {
            "call_id": call_id,
            "state": str(record.state),
            "direction": record.direction,
            "agent_id": record.agent,
            "agent_name": record.agent_name,
            "from": record.from_number,
            "to": record.to_number,
            "carrier": record.carrier,
            "routing": dict(record.routing or {}),
            "started_at": iso(record.created_at),
            "answered_at": iso(answered),
            "ended_at": iso(ended),
            "duration_s": round(ended - answered, 3) if answered is not None else 0.0,
            "carrier_status": data.get("status"),
        }
        try:
            agent = await self.directory.get_agent_by_id(record.agent, tenant)
        except (AgentNotFound, ValueError):
            agent = None
        if agent is None or not agent.store_transcripts:
            return out | {"transcript": None, "summary": None, "fields": None}
        try:
            turns, complete = await self.calls.transcript_state(call_id)
        except Exception as e:  # unreadable (key gone, corrupt): sent without it
            log.warning(
                "call.ended without its transcript",
                extra={"call_id": call_id, "error": type(e).__name__},
            )
            why = f"transcript not readable ({type(e).__name__})"
            return (
                out
                | {"transcript": None, "summary": None, "fields": None}
                | {"transcript_error": why}
            )
        if not complete and self._clock() - ended < self.settle_s:
            return None
        out["transcript"] = [
            {"role": t.role, "text": t.text, "at": iso(t.at), "interrupted": t.interrupted}
            for t in turns
        ]
        out["transcript_complete"] = complete
        schema = agent.extraction_schema
        if self.summarizer is None:
            return out | {"summary": None, "fields": None}
        try:
            got = await self.summarizer.digest(turns, schema, call_id)
        except Exception as e:  # the summary and fields are extras: the call is sent
            log.warning(
                "call summary failed", extra={"call_id": call_id, "error": type(e).__name__}
            )
            got = CallDigest(
                None,
                None,
                f"extraction failed ({type(e).__name__})" if schema is not None else None,
                f"summary failed ({type(e).__name__})",
            )
        out |= {"summary": got.summary, "fields": got.fields}
        if schema is not None and got.fields is None:
            out["extraction_error"] = got.extraction_error
        if got.summary_error:
            out["summary_error"] = got.summary_error
        return out
