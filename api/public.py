"""Public endpoints (no key): the sub-processor register in force."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response
from pydantic import BaseModel

from routing.subprocessors import Register


class SubprocessorOut(BaseModel):
    """One sub-processor as published."""

    name: str
    service: str
    location: str
    safeguards: str
    added: dt.date | None
    effective: dt.date | None


class RegisterOut(BaseModel):
    """The register in force and when it last changed."""

    version: str
    last_updated: dt.date | None
    subprocessors: list[SubprocessorOut]


def router(register: Register) -> APIRouter:
    """Routes publishing ``register``."""
    r = APIRouter(prefix="/v1", tags=["public"])

    @r.get("/subprocessors", response_model=RegisterOut)
    async def subprocessors(response: Response) -> RegisterOut:
        """The sub-processors in force today (DPA: 30 days' notice before an addition)."""
        published = register.published(dt.datetime.now(dt.UTC))
        response.headers["Cache-Control"] = "public, max-age=3600"
        return RegisterOut.model_validate(published)

    return r
