"""HTTP tools: the model's call of a customer's endpoint, validated, signed and bounded.

The arguments are checked against the tool's JSON schema, then sent to its URL through
:class:`~integrations.egress.Egress` as a JSON body (POST, PUT or PATCH), signed with the
tenant's tool secret the Standard Webhooks way; without that secret no tool is called.
Whatever happens, the model gets a :class:`ToolOutcome`; only the tool's name, the status and
the duration are logged, never the arguments or the answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from integrations.egress import Egress
from integrations.errors import EgressFailed, EgressRefused, EgressTimeout
from integrations.secrets import ToolSecrets
from integrations.signing import new_message_id, signed_headers
from routing.directory import HttpTool

log = logging.getLogger(__name__)
#: Characters of an answer handed to the model (the rest is cut, and said to be).
RESULT_CHARS = 4000
USER_AGENT = "Bonmoniq-Tools/1"


@dataclass(frozen=True)
class ToolOutcome:
    """How one tool call went, and the text the model reads about it."""

    status: str  # "ok" | "timeout" | "refused" | "too_large" | "http_error" | "error"
    result: str
    duration_s: float
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the endpoint answered with a success."""
        return self.status == "ok"


def result_text(body: bytes, content_type: str, limit: int = RESULT_CHARS) -> str:
    """An answer as the model reads it: JSON compacted, text as it is, both cut at ``limit``."""
    text = body.decode("utf-8", errors="replace").strip()
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            pass
    if len(text) > limit:
        return text[:limit] + " …(cut)"
    return text or "(empty answer)"


class ToolRunner:
    """Runs agents' HTTP tools for calls (one for the process)."""

    def __init__(
        self,
        egress: Egress,
        secrets: ToolSecrets,
        *,
        max_bytes: int = 16 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Send through ``egress``, sign with ``secrets``; answers read up to ``max_bytes``."""
        self.egress = egress
        self.secrets = secrets
        self.max_bytes = max_bytes
        self._clock = clock

    async def run(
        self, tenant: str, call_id: str, tool: HttpTool, arguments: Mapping[str, Any]
    ) -> ToolOutcome:
        """Call ``tool`` with ``arguments`` for the call ``call_id``; never raises."""
        started = time.monotonic()
        try:
            outcome = await self._run(tenant, call_id, tool, arguments, started)
        except Exception:  # a tool's failure is the model's to tell the caller, never a crash
            log.exception("tool failed", extra={"call_id": call_id, "tool": tool.name})
            outcome = ToolOutcome(
                "error", f"The tool {tool.name} failed.", time.monotonic() - started
            )
        log.info(
            "tool called",
            extra={
                "call_id": call_id,
                "tool": tool.name,
                "status": outcome.status,
                "http_status": outcome.http_status,
                "duration_s": round(outcome.duration_s, 3),
            },
        )
        return outcome

    async def _run(
        self,
        tenant: str,
        call_id: str,
        tool: HttpTool,
        arguments: Mapping[str, Any],
        started: float,
    ) -> ToolOutcome:
        def done(status: str, result: str, http_status: int | None = None) -> ToolOutcome:
            return ToolOutcome(status, result, time.monotonic() - started, http_status)

        if not isinstance(arguments, Mapping):
            return done("error", "The arguments must be a JSON object.")
        try:
            error = best_match(Draft202012Validator(tool.parameters).iter_errors(dict(arguments)))
        except Exception as e:  # a schema jsonschema cannot apply ($ref unresolvable, ...)
            log.warning(
                "tool parameters not checkable",
                extra={"call_id": call_id, "tool": tool.name, "error": type(e).__name__},
            )
            return done("error", f"The tool {tool.name} cannot be used just now.")
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "arguments"
            return done("error", f"Invalid arguments for {tool.name} ({where}): {error.message}")
        secret = await self.secrets.current(tenant)
        if secret is None:  # made only through the API, so the customer can verify requests
            return done(
                "refused", f"The tool {tool.name} is not set up yet, so it cannot be used now."
            )
        body = json.dumps(dict(arguments), separators=(",", ":")).encode()
        headers = signed_headers(secret, new_message_id(), int(self._clock()), body)
        headers |= {
            "user-agent": USER_AGENT,
            "bonmoniq-call-id": call_id,
            "content-type": "application/json",
        }
        try:
            answer = await self.egress.request(
                tool.method,
                tool.url,
                headers=headers,
                body=body,
                timeout_s=tool.timeout_s,
                max_bytes=self.max_bytes,
            )
        except EgressRefused as e:
            return done("refused", f"The tool {tool.name} may not be called: {e}.")
        except EgressTimeout:
            return done("timeout", f"The tool {tool.name} did not answer in time.")
        except EgressFailed as e:
            return done("error", f"The tool {tool.name} could not be reached: {e}.")
        if 300 <= answer.status < 400:
            return done(
                "http_error",
                f"The tool {tool.name} answered a redirect, which is not followed.",
                answer.status,
            )
        if answer.status >= 400 or answer.status < 200:
            return done(
                "http_error", f"The tool {tool.name} answered HTTP {answer.status}.", answer.status
            )
        if answer.truncated:
            return done(
                "too_large",
                f"The tool {tool.name}'s answer was larger than {self.max_bytes} bytes.",
                answer.status,
            )
        return done("ok", result_text(answer.body, answer.content_type), answer.status)
