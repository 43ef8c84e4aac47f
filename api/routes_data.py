"""Recordings (``/v1/calls/{id}/recording``), legal holds, and data-subject requests.

Every read of a recording, every deletion, hold and data-subject request is audited. Phone
numbers never enter the audit log: a data subject is named by a keyed digest.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException

from api import idempotency
from api.auth import tenant_key
from api.problems import API_ERRORS, ApiProblem
from api.routes_calls import tenant_call
from api.schema import PhoneNumber
from calls.records import CallRecord
from calls.store import CallStore
from recordings.errors import DecryptionError, NoTenantKey
from recordings.lifecycle import Lifecycle, wav
from recordings.objects import EncryptedObjects
from recordings.subjects import ip_party
from routing.directory import normalise_number
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore

WAV = "audio/wav"
ZIP = "application/zip"


def _binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses``: a 200 whose body is a file of ``media_type``."""
    schema = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"content": {media_type: schema}, "description": description}}


class HoldIn(BaseModel):
    """Place (``hold: true``) or lift a legal hold."""

    model_config = ConfigDict(extra="ignore")
    hold: StrictBool
    reason: str = Field(default="", max_length=500)


class HoldOut(BaseModel):
    """A call's legal hold."""

    call_id: str
    legal_hold: bool
    reason: str


class PhoneSubject(BaseModel):
    """A data subject by phone number (E.164)."""

    model_config = ConfigDict(extra="ignore")
    phone_number: PhoneNumber

    def party(self) -> str:
        """The number as calls' parties are digested (E.164)."""
        return normalise_number(self.phone_number)


def _text(value: object) -> object:
    """An address is written as text (the address types would also take a number)."""
    if not isinstance(value, str) or "%" in value:  # a number, or an IPv6 zone (local only)
        raise ValueError("an IP address is a string, without a zone")
    return value


class AddressSubject(BaseModel):
    """A data subject by IP address: a browser (WebRTC) caller."""

    model_config = ConfigDict(extra="ignore")
    ip_address: Annotated[IPv4Address | IPv6Address, BeforeValidator(_text)]

    def party(self) -> str:
        """The address as calls' parties are digested (canonical form)."""
        return ip_party(str(self.ip_address)) or str(self.ip_address)


#: A data subject: a caller's phone number, or a browser caller's IP address.
SubjectIn = PhoneSubject | AddressSubject


class ErasureOut(BaseModel):
    """What an erasure did."""

    erased_calls: int
    kept_under_legal_hold: list[str]


def router(
    *,
    tenants: TenantStore,
    calls: CallStore,
    objects: EncryptedObjects,
    lifecycle: Lifecycle,
    audit: AuditLog,
) -> APIRouter:
    """Recordings and legal holds of ``calls``, data-subject requests through ``lifecycle``."""
    r = APIRouter(prefix="/v1", responses=API_ERRORS)
    viewer = Depends(tenant_key(tenants, Role.VIEWER))
    editor = Depends(tenant_key(tenants, Role.EDITOR))
    admin = Depends(tenant_key(tenants, Role.ADMIN))

    async def find(caller: Caller, call_id: str) -> CallRecord:
        return await tenant_call(calls, caller, call_id)

    @r.get(
        "/calls/{call_id}/recording",
        tags=["calls"],
        response_class=Response,
        responses=_binary(WAV, "WAV, 8 kHz, 16-bit, stereo (caller left, agent right)"),
    )
    async def recording(call_id: str, caller: Caller = viewer) -> Response:
        """The call's recording, decrypted (each read audited); 404 if it was not recorded.

        ``X-Recording-Complete: false`` marks a recording cut short by a crash: the audio that
        authenticates is served, the rest is missing.
        """
        await find(caller, call_id)
        found = await objects.of_call(call_id, "recording")
        if not found:
            raise HTTPException(404, "this call has no recording")
        try:
            opened = await objects.open(found[0])
        except (DecryptionError, NoTenantKey) as e:
            raise ApiProblem(409, "recording_unreadable", str(e)) from e
        await audit.record(caller, "recording.read", call_id)
        return Response(
            wav(opened.plaintext),
            media_type=WAV,
            headers={"X-Recording-Complete": "true" if opened.complete else "false"},
        )

    @r.delete("/calls/{call_id}/recording", status_code=204, tags=["calls"])
    async def delete_recording(call_id: str, caller: Caller = editor) -> Response:
        """Delete the call's recording (refused while the call is under legal hold)."""
        await find(caller, call_id)
        if (await lifecycle.call(call_id)).get("legal_hold"):
            raise ApiProblem(409, "legal_hold", "the call is under legal hold")
        found = await objects.of_call(call_id, "recording")
        if not found:
            raise HTTPException(404, "this call has no recording")
        for info in found:
            await objects.delete(info.object_id)
        await audit.record(caller, "recording.delete", call_id)
        return Response(status_code=204)

    @r.put("/calls/{call_id}/legal-hold", response_model=HoldOut, tags=["calls"])
    async def legal_hold(call_id: str, body: HoldIn, caller: Caller = admin) -> HoldOut:
        """Place or lift a legal hold: a held call survives retention and erasure."""
        await find(caller, call_id)
        await lifecycle.set_hold(call_id, body.hold, body.reason)
        await audit.record(
            caller, "call.hold" if body.hold else "call.release_hold", call_id, reason=body.reason
        )
        return HoldOut(
            call_id=call_id, legal_hold=body.hold, reason=body.reason if body.hold else ""
        )

    @r.post(
        "/data-subjects/export",
        tags=["data subjects"],
        response_class=Response,
        responses=_binary(ZIP, "manifest.json, transcripts and recordings (WAV)"),
    )
    async def export(body: SubjectIn, caller: Caller = admin) -> Response:
        """Everything of your tenant involving a phone number or an IP address (GDPR Art. 15/20).

        A zip: manifest, transcripts and recordings.
        """
        number = body.party()
        calls = await lifecycle.calls_of(caller.tenant_id, number)
        archive = await lifecycle.export(
            caller.tenant_id, calls, {"kind": "data subject export", "subject": number}
        )
        subject = lifecycle.subject_ref(caller.tenant_id, number)
        idempotency.about(caller.tenant_id, subject)  # a stored copy goes with an erasure
        await audit.record(caller, "data_subject.export", subject, calls=len(calls))
        return Response(
            archive,
            media_type=ZIP,
            headers={"Content-Disposition": 'attachment; filename="data-subject-export.zip"'},
        )

    @r.post("/data-subjects/erase", response_model=ErasureOut, tags=["data subjects"])
    async def erase(body: SubjectIn, caller: Caller = admin) -> ErasureOut:
        """Erase every call of your tenant involving a phone number or IP address (GDPR Art. 17).

        Calls under legal hold are kept and listed.
        """
        number = body.party()
        done = await lifecycle.erase_subject(caller.tenant_id, number)
        subject = lifecycle.subject_ref(caller.tenant_id, number)
        await audit.record(
            caller, "data_subject.erase", subject, erased=len(done.erased), held=len(done.held)
        )
        return ErasureOut(erased_calls=len(done.erased), kept_under_legal_hold=done.held)

    return r
