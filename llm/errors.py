"""Errors of the language-model layer; each carries a stable ``code``."""


class LLMError(Exception):
    """Base error of the LLM layer."""

    code = "llm_error"


class EndpointRefused(LLMError):
    """The configured endpoint is not a host the operator runs (a third-party AI API)."""

    code = "llm_endpoint_refused"


class LLMUnavailable(LLMError):
    """The LLM server did not answer, or the embedded server failed to start."""

    code = "llm_unavailable"
