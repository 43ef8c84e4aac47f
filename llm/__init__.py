"""Language-model access: the endpoint check, the embedded server and the streaming client.

The one OpenAI-compatible streaming client lives in ``llm.client``; it pulls in pipecat, so it
is imported on its own rather than from here.
"""

from llm.endpoint import THIRD_PARTY_AI_HOSTS, LLMEndpoint, check_endpoint
from llm.errors import EndpointRefused, LLMError, LLMUnavailable
from llm.server import EmbeddedLLMServer, die_with_parent, free_port

__all__ = [
    "THIRD_PARTY_AI_HOSTS",
    "EmbeddedLLMServer",
    "EndpointRefused",
    "LLMEndpoint",
    "LLMError",
    "LLMUnavailable",
    "check_endpoint",
    "die_with_parent",
    "free_port",
]
