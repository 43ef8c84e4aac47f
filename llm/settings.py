"""Settings of the language model: where it is, and how long and how varied its answers are."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: MB of prompt states the embedded server keeps by default (``BONMONIQ_LLM_PROMPT_STATES_MB``).
PROMPT_STATES_MB = 256


class LLMSettings(BaseSettings):
    """``BONMONIQ_LLM_*``."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_LLM_", extra="ignore")

    url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (vLLM). Unset: embedded server."
    )
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    max_tokens: int = 60
    max_sentences: int = Field(
        default=2, description="An answer is cut after this many sentences (0: never)."
    )
    temperature: float = 0.3
    generation_threads: int | None = Field(
        default=None,
        description="Threads of the embedded LLM while it writes an answer (it reads the prompt "
        "with cpu_threads). Unset: half of cpu_threads, so that Piper speaking the first "
        "sentence and the LLM writing the next one each have a core.",
    )
    prompt_states_mb: int = Field(
        default=PROMPT_STATES_MB,
        ge=0,
        description="MB of recent prompt states the embedded LLM server keeps (0: none), so a "
        "call's turn reads only what is new since its last turn (llm/llama_server.py).",
    )

    def key(self) -> str | None:
        """The API key in clear, for the client that sends it."""
        return self.api_key.get_secret_value() if self.api_key else None
