"""A finished call's summary and the fields its agent asks for, written by the platform's LLM.

Both are one non-streamed chat completion each at the OpenAI-compatible endpoint. The fields
are asked for with the agent's JSON schema as ``response_format`` and checked against it with
``jsonschema``; a server that refuses the format is asked again for plain JSON. A failed or
invalid extraction leaves the fields out with the reason, never failing the delivery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from calls.records import Turn
from llm.endpoint import LLMEndpoint

log = logging.getLogger(__name__)
SUMMARY_PROMPT = (
    "Summarise this phone call between a caller and an AI agent in at most three sentences: "
    "why the caller called, what was done, what is left to do. Answer with the summary only."
)
EXTRACTION_PROMPT = (
    "Read this phone call between a caller and an AI agent and fill in the fields of the JSON "
    "schema below from what was said. Answer with one JSON object only, nothing else.\n"
    "Schema: {schema}"
)
#: Characters of the transcript sent to the model (the end of a long call is kept).
TRANSCRIPT_CHARS = 12000


@dataclass(frozen=True)
class CallDigest:
    """What the model made of a call."""

    summary: str | None
    fields: dict[str, Any] | None
    extraction_error: str | None = None
    summary_error: str | None = None


def conversation(turns: Sequence[Turn]) -> str:
    """The transcript as plain lines for the model."""
    text = "\n".join(f"{t.role}: {t.text}" for t in turns)
    return text[-TRANSCRIPT_CHARS:]


def _json_object(text: str) -> Any:
    """The JSON object in a model's answer (code fences around it tolerated)."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the answer holds no JSON object")
    return json.loads(text[start : end + 1])


class Summarizer:
    """Asks the platform's LLM for a call's summary and fields."""

    def __init__(self, endpoint: LLMEndpoint, timeout_s: float = 30.0, max_tokens: int = 300):
        """Ask ``endpoint``; each request waits at most ``timeout_s``."""
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens

    async def _complete(self, client: httpx.AsyncClient, body: dict[str, Any]) -> str:
        headers = (
            {"Authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}
        )
        body = {"model": self.endpoint.model, "max_tokens": self.max_tokens, "stream": False} | body
        r = await client.post(f"{self.endpoint.v1}/chat/completions", json=body, headers=headers)
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"].get("content") or "")

    async def digest(
        self, turns: Sequence[Turn], schema: Mapping[str, Any] | None, call_id: str = ""
    ) -> CallDigest:
        """The summary of ``turns`` and, with ``schema``, the fields; never raises."""
        if not turns:
            return CallDigest(None, None, "no transcript" if schema else None, "no transcript")
        text = conversation(turns)
        summary: str | None = None
        summary_error = None
        fields: dict[str, Any] | None = None
        extraction_error = None
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            try:
                messages = [
                    {"role": "system", "content": SUMMARY_PROMPT},
                    {"role": "user", "content": text},
                ]
                summary = (await self._complete(client, {"messages": messages})).strip() or None
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                summary_error = f"summary failed ({type(e).__name__})"
                log.warning(
                    "call summary failed", extra={"call_id": call_id, "error": type(e).__name__}
                )
            if schema is not None:
                fields, extraction_error = await self._extract(client, text, schema, call_id)
        return CallDigest(summary, fields, extraction_error, summary_error)

    async def _extract(
        self, client: httpx.AsyncClient, text: str, schema: Mapping[str, Any], call_id: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        messages = [
            {"role": "system", "content": EXTRACTION_PROMPT.format(schema=json.dumps(schema))},
            {"role": "user", "content": text},
        ]
        formats: list[dict[str, Any]] = [
            {"type": "json_schema", "json_schema": {"name": "fields", "schema": dict(schema)}},
            {"type": "json_object"},
        ]
        answer: str | None = None
        for fmt in formats:
            try:
                answer = await self._complete(
                    client, {"messages": messages, "response_format": fmt, "temperature": 0}
                )
                break
            except httpx.HTTPStatusError as e:
                if e.response.status_code not in (400, 422):
                    return None, f"extraction failed (HTTP {e.response.status_code})"
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                log.warning(
                    "extraction failed", extra={"call_id": call_id, "error": type(e).__name__}
                )
                return None, f"extraction failed ({type(e).__name__})"
        if answer is None:
            return None, "the model refused the response format"
        try:
            fields = _json_object(answer)
        except ValueError:
            return None, "the model's answer is not a JSON object"
        if not isinstance(fields, dict):
            return None, "the model's answer is not a JSON object"
        try:
            error = best_match(Draft202012Validator(dict(schema)).iter_errors(fields))
        except Exception as e:  # a schema jsonschema cannot apply ($ref unresolvable, ...)
            log.warning(
                "extraction not checkable", extra={"call_id": call_id, "error": type(e).__name__}
            )
            return None, f"the schema cannot be checked ({type(e).__name__})"
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return None, f"the fields do not match the schema at {where}: {error.validator}"
        return fields, None
