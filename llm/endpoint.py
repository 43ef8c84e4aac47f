"""The DPA check on the LLM endpoint: conversation content goes only to hosts the operator runs.

Pure: a URL and the operator's allow-list in, the validated endpoint or an error out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from llm.errors import EndpointRefused

#: Hosts (and their sub-domains) of third-party AI APIs. Refused whatever the allow-list says:
#: the DPA promises that no third-party AI provider receives conversation content.
THIRD_PARTY_AI_HOSTS: tuple[str, ...] = (
    "openai.com",
    "openai.azure.com",
    "cognitiveservices.azure.com",
    "inference.ai.azure.com",
    "services.ai.azure.com",
    "anthropic.com",
    "claude.ai",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "mistral.ai",
    "groq.com",
    "together.xyz",
    "together.ai",
    "fireworks.ai",
    "deepseek.com",
    "cohere.ai",
    "cohere.com",
    "openrouter.ai",
    "perplexity.ai",
    "x.ai",
    "deepinfra.com",
    "replicate.com",
    "huggingface.co",
    "cerebras.ai",
    "sambanova.ai",
    "novita.ai",
    "ai21.com",
    "voyageai.com",
    "moonshot.cn",
    "dashscope.aliyuncs.com",
)
#: Private name suffixes an operator's own servers typically use.
_PRIVATE_SUFFIXES = (
    ".internal",
    ".local",
    ".lan",
    ".home.arpa",
    ".localdomain",
    ".svc",
    ".cluster.local",
)


def _under(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def _is_third_party(host: str) -> bool:
    if any(_under(host, d) for d in THIRD_PARTY_AI_HOSTS):
        return True
    # Regional endpoints: <region>-aiplatform.googleapis.com (Vertex AI),
    # bedrock-runtime.<region>.amazonaws.com (AWS Bedrock).
    if host.endswith("-aiplatform.googleapis.com"):
        return True
    return host.startswith("bedrock") and host.endswith(".amazonaws.com")


def _is_private(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES)
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _allowed(host: str, allowed_hosts: list[str]) -> bool:
    for entry in allowed_hosts:
        entry = entry.strip().lower()
        if entry.startswith("*.") and _under(host, entry[2:]):
            return True
        if host == entry:
            return True
    return False


def check_endpoint(url: str, allowed_hosts: list[str]) -> str:
    """Return ``url`` normalised (no trailing slash) if the operator may use it.

    Rules: a known third-party AI API host is always refused; a host on the operator's
    allow-list (``BONMONIQ_LLM_ALLOWED_HOSTS``, ``*.example.com`` allowed) is accepted;
    loopback, private addresses and private names (single label, ``.internal``, ``.local``...)
    are accepted; any other public host is refused until the operator lists it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointRefused(f"BONMONIQ_LLM_URL must be an http(s) URL, got {url!r}")
    host = parts.hostname.lower().rstrip(".")
    if _is_third_party(host):
        raise EndpointRefused(
            f"BONMONIQ_LLM_URL points at {host}, a third-party AI API; the DPA forbids sending "
            "conversation content to a third-party AI provider. Point it at your own vLLM server."
        )
    if not (_allowed(host, allowed_hosts) or _is_private(host)):
        raise EndpointRefused(
            f"BONMONIQ_LLM_URL host {host} is not on BONMONIQ_LLM_ALLOWED_HOSTS; list it there "
            "if it is a server you run"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class LLMEndpoint:
    """An OpenAI-compatible server (``/v1`` base URL) that passed :func:`check_endpoint`."""

    base_url: str
    model: str
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) base URL: {self.base_url!r}")

    @property
    def v1(self) -> str:
        """The ``/v1`` root of the API."""
        return self.base_url if self.base_url.endswith("/v1") else f"{self.base_url}/v1"
