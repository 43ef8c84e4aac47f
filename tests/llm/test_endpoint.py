"""The DPA check on BONMONIQ_LLM_URL."""

from __future__ import annotations

import pytest

from llm import EndpointRefused, check_endpoint


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://myorg.openai.azure.com/openai/deployments/x",
        "https://api.anthropic.com",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "https://europe-west4-aiplatform.googleapis.com/v1",
        "https://api.mistral.ai/v1",
        "https://api.groq.com/openai/v1",
        "https://api.together.xyz/v1",
        "https://openrouter.ai/api/v1",
        "https://bedrock-runtime.eu-west-1.amazonaws.com",
        "https://API.OpenAI.com./v1",
    ],
)
def test_third_party_ai_hosts_are_refused_even_when_allow_listed(url: str) -> None:
    with pytest.raises(EndpointRefused, match="third-party AI"):
        check_endpoint(url, allowed_hosts=["*.com", "api.openai.com", "*.ai", "*.googleapis.com"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/v1",
        "http://localhost:8000",
        "http://[::1]:8000/v1",
        "http://10.0.3.7:8000/v1",
        "http://vllm:8000/v1",
        "http://vllm.internal:8000/v1",
        "http://gpu-1.cluster.local/v1",
    ],
)
def test_operator_hosts_are_accepted(url: str) -> None:
    assert check_endpoint(url, []) == url.rstrip("/")


def test_public_host_needs_the_allow_list() -> None:
    with pytest.raises(EndpointRefused, match="BONMONIQ_LLM_ALLOWED_HOSTS"):
        check_endpoint("https://llm.bonmoniq.eu/v1", [])
    assert (
        check_endpoint("https://llm.bonmoniq.eu/v1/", ["llm.bonmoniq.eu"])
        == "https://llm.bonmoniq.eu/v1"
    )
    assert check_endpoint("https://a.gpu.bonmoniq.eu/v1", ["*.bonmoniq.eu"])
    # A look-alike of an allowed suffix is not under it.
    with pytest.raises(EndpointRefused):
        check_endpoint("https://evilbonmoniq.eu/v1", ["*.bonmoniq.eu"])


@pytest.mark.parametrize("url", ["ftp://vllm/v1", "vllm:8000", "", "http://"])
def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(EndpointRefused, match="http"):
        check_endpoint(url, [])
