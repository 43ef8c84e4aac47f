"""Browser calls: ``/v1/agents/{id}/webrtc`` (tokens, the offer/answer) and the ``/try`` page.

An editor's key makes a short-lived token for one call to one agent; a page holding the token
(or a client holding a key) posts its SDP offer and gets the answer; the call then runs as
any other (telephony/webrtc.py). ``/try/{agent_id}`` serves a page that places such a call
with the token in its URL's fragment, which browsers never send to the server.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from starlette.exceptions import HTTPException

from api.auth import bearer, tenant_key
from api.problems import API_ERRORS, ApiProblem, responses
from api.schema import whole
from api.write_limits import write_limit
from routing.errors import AgentNotFound
from telephony.webrtc import MAX_SDP, TOKEN_PREFIX, WebRtcCalls, WebRtcRefused, WebRtcTokens
from tenancy.audit import AuditLog
from tenancy.tenants import Caller, Role, TenantStore
from tenancy.write_limits import WriteLimiter

PAGE = Path(__file__).parent / "static" / "try.html"
AgentId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: The page runs its own inline script and talks only to this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "media-src 'self' blob:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@functools.cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


class TokenIn(BaseModel):
    """How long the token may be used (it places one call)."""

    model_config = ConfigDict(extra="ignore")
    ttl_s: Annotated[StrictInt, BeforeValidator(whole)] = Field(
        default=600, ge=60, le=3600, description="Lifetime in seconds"
    )


class TokenOut(BaseModel):
    """A browser-call token: shown once, never stored in clear."""

    token: str
    expires_at: str = Field(description="ISO 8601, UTC")
    try_url: str = Field(description="The test page with the token in its fragment")


class OfferIn(BaseModel):
    """The browser's SDP offer, with its ICE candidates gathered (no trickle ICE)."""

    model_config = ConfigDict(extra="ignore")
    sdp: str = Field(min_length=1, max_length=MAX_SDP)
    type: Literal["offer"]


class AnswerOut(BaseModel):
    """The platform's SDP answer and the call it placed."""

    sdp: str
    type: Literal["answer"] = "answer"
    call_id: str


def router(
    *,
    tenants: TenantStore,
    audit: AuditLog,
    writes: WriteLimiter,
    tokens: WebRtcTokens,
    calls: WebRtcCalls,
) -> APIRouter:
    """Browser calls to the tenants' agents, and the test page."""
    r = APIRouter(responses=API_ERRORS)
    as_editor = tenant_key(tenants, Role.EDITOR)
    editor = Depends(as_editor)
    limited = write_limit(writes, as_editor)

    async def placing(request: Request) -> str | None:
        """The tenant of an editor's key (checked before the body), or ``None`` for a token.

        A token is redeemed once the body is valid: a malformed offer does not use it up.
        """
        if bearer(request).startswith(TOKEN_PREFIX):
            return None
        caller: Caller = await as_editor(request)
        return caller.tenant_id

    placer = Depends(placing)

    @r.post(
        "/v1/agents/{agent_id}/webrtc/tokens",
        status_code=201,
        response_model=TokenOut,
        dependencies=[limited],
        tags=["browser calls"],
    )
    async def issue(
        agent_id: AgentId, body: TokenIn | None = None, caller: Caller = editor
    ) -> TokenOut:
        """A token that lets a page place one call to the agent, within ``ttl_s`` seconds."""
        ttl = (body or TokenIn()).ttl_s
        try:
            agent = await calls.directory.get_agent_by_id(agent_id, caller.tenant_id)
        except AgentNotFound as e:
            raise HTTPException(404, "no such agent") from e
        calls.prepare(agent)  # the page's call will not wait for its phrases
        token = await tokens.issue(caller.tenant_id, agent_id, ttl)
        await audit.record(caller, "webrtc.token", agent_id, ttl_s=ttl)
        expires = dt.datetime.fromtimestamp(time.time() + ttl, dt.UTC)
        return TokenOut(
            token=token,
            expires_at=expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
            try_url=f"/try/{agent_id}#token={token}",
        )

    @r.post(
        "/v1/agents/{agent_id}/webrtc",
        status_code=201,
        response_model=AnswerOut,
        tags=["browser calls"],
        responses=responses(422, 503),
    )
    async def offer(
        agent_id: AgentId, body: OfferIn, request: Request, keyed: str | None = placer
    ) -> AnswerOut:
        """Answer a browser's offer: the agent takes the call (a token or an editor's key)."""
        tenant = keyed or await tokens.redeem(bearer(request), agent_id)
        if tenant is None:
            raise ApiProblem(401, "invalid_token", "the token is unknown, used or expired")
        address = request.client.host if request.client else ""
        try:
            call_id, answer = await calls.call(tenant, agent_id, body.sdp, address)
        except AgentNotFound as e:
            raise HTTPException(404, "no such agent") from e
        except WebRtcRefused as e:
            raise ApiProblem(e.status, e.code, str(e)) from e
        return AnswerOut(sdp=answer, call_id=call_id)

    @r.get("/try/{agent_id}", response_class=HTMLResponse, include_in_schema=False)
    async def page(agent_id: AgentId) -> HTMLResponse:
        """The test page: it places a browser call with the token in its URL's fragment."""
        return HTMLResponse(
            _page(),
            headers={
                "Content-Security-Policy": PAGE_POLICY,
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    return r
