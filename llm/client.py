"""The one OpenAI-compatible streaming client, for vLLM and the embedded server alike."""

from __future__ import annotations

import httpx
from pipecat.services.openai.llm import OpenAILLMService

from llm.endpoint import LLMEndpoint
from llm.errors import LLMUnavailable


def create_llm_service(
    endpoint: LLMEndpoint, *, system: str, max_tokens: int, temperature: float
) -> OpenAILLMService:
    """A streaming chat-completions service for one call's pipeline, with its system prompt."""
    return OpenAILLMService(
        base_url=endpoint.v1,
        # The openai SDK insists on a key; self-hosted servers accept any.
        api_key=endpoint.api_key or "not-needed",
        settings=OpenAILLMService.Settings(
            model=endpoint.model,
            max_tokens=max_tokens,
            temperature=temperature,
            system_instruction=system,
        ),
        retry_timeout_secs=10.0,
    )


async def probe(endpoint: LLMEndpoint, limit_s: float = 3.0) -> list[str]:
    """Ask the server for its models; the model ids, or :class:`LLMUnavailable`."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        async with httpx.AsyncClient(timeout=limit_s) as client:
            r = await client.get(f"{endpoint.v1}/models", headers=headers)
            r.raise_for_status()
            return [m["id"] for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError) as e:
        raise LLMUnavailable(f"LLM server {endpoint.v1} did not answer: {e}") from e
