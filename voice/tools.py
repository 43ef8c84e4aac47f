"""The tools the model may call in a call: the platform's own, the keypad, the agent's HTTP tools.

The model sees the built-ins (``end_call``, ``stop_recording``), ``transfer`` when the agent
can transfer, ``collect_digits`` when the agent takes keypad input, and each of the agent's
HTTP tools with its own JSON schema. An HTTP tool runs through the platform's tool runner
(integrations/tools.py, injected as :class:`ToolRunner`): the caller hears the filler ("One
moment, please." in the agent's language) at once, the result (or the reason it failed) goes
back to the model, which answers; an answer owed after a failure that comes back empty is
replaced by the tool-trouble phrase (llm/client.PhoneLLMService). Each run is a
``tool_called`` event with the tool's name, how long it took and its status, never its
arguments or result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import FunctionCallResultProperties, TTSSpeakFrame
from pipecat.services.llm_service import FunctionCallParams, LLMService

from calls.events import CallEventType
from routing.directory import Agent, HttpTool
from voice.digits import DigitCollector
from voice.prompt import END_CALL_TOOLS, said

log = logging.getLogger(__name__)

#: pipecat's own deadline for a tool, beyond the runner's (which never overruns its timeout).
_DEADLINE_MARGIN_S = 5.0

TRANSFER_TOOL = FunctionSchema(
    name="transfer",
    description="Transfer the caller to a person: when they ask for one, or when you cannot "
    "help them.",
    properties={},
    required=[],
)
COLLECT_DIGITS_TOOL = FunctionSchema(
    name="collect_digits",
    description="Let the caller type digits on their phone's keypad (an order number, a menu "
    "choice). Their digits come back as their next message, starting with '(keypad)'.",
    properties={
        "prompt": {
            "type": "string",
            "description": "What to say to the caller first, for example 'Please type your "
            "order number, then the hash key.'",
        }
    },
    required=[],
)


class ToolOutcome(Protocol):
    """What a tool run gave (integrations/tools.ToolOutcome)."""

    @property
    def status(self) -> str:
        """``ok``, ``timeout``, ``refused``, ``too_large``, ``http_error`` or ``error``."""

    @property
    def result(self) -> str:
        """The endpoint's answer when ok, else a short reason the model can read."""

    @property
    def duration_s(self) -> float:
        """How long the run took."""


class ToolRunner(Protocol):
    """Runs an agent's HTTP tool for a call; never raises (integrations/tools.ToolRunner)."""

    async def run(
        self, tenant: str, call_id: str, tool: HttpTool, arguments: Mapping[str, Any]
    ) -> ToolOutcome:
        """Send ``arguments`` to the tool's endpoint; what came of it."""


class HttpToolSchema(FunctionSchema):
    """An HTTP tool as the model sees it: its name, description and whole JSON schema."""

    def __init__(self, tool: HttpTool) -> None:
        """The schema of ``tool``."""
        parameters = dict(tool.parameters)
        super().__init__(
            name=tool.name,
            description=tool.description,
            properties=dict(parameters.get("properties") or {}),
            required=list(parameters.get("required") or []),
        )
        self._parameters = parameters

    def to_default_dict(self) -> dict[str, Any]:
        """The OpenAI function definition, with the tool's parameters schema as given."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self._parameters,
        }


def context_tools(agent: Agent, can_transfer: bool) -> ToolsSchema:
    """Every tool the model of ``agent``'s calls may call (``end_call`` when the agent lists it)."""
    tools: list[FunctionSchema] = [
        t
        for t in END_CALL_TOOLS.standard_tools
        if t.name != "end_call" or "end_call" in agent.tools  # stop_recording: always (consent)
    ]
    if can_transfer:
        tools.append(TRANSFER_TOOL)
    if agent.dtmf is not None:
        tools.append(COLLECT_DIGITS_TOOL)
    tools += [HttpToolSchema(t) for t in agent.http_tools]
    return ToolsSchema(standard_tools=tools)


def for_the_model(status: str, result: str) -> Any:
    """A tool's outcome as the model reads it (never empty: an empty result runs no answer)."""
    if status == "ok":
        try:
            parsed = json.loads(result) if result.strip() else None
        except ValueError:
            parsed = result
        return parsed if parsed not in (None, "", [], {}) else {"ok": True}
    return {
        "ok": False,
        "status": status,
        "reason": result or status,
        "say": "Tell the caller in one short sentence that you could not get this just now.",
    }


class InCallTools:
    """The handlers of one call's keypad and HTTP tools, registered on its LLM service.

    ``event(kind, **data)`` records a call event.
    """

    def __init__(
        self,
        agent: Agent,
        tenant: str,
        call_id: str,
        runner: ToolRunner | None,
        event: Callable[..., Awaitable[None]],
        language: Callable[[], str] | None = None,
    ) -> None:
        """Tools of ``agent`` in call ``call_id`` of ``tenant``, run by ``runner``.

        ``language()``: the call's language now (default: the agent's), for the filler.
        """
        self.agent = agent
        self._language = language or (lambda: agent.language)
        self.tenant = tenant
        self.call_id = call_id
        self.runner = runner
        self._event = event
        self._digits: DigitCollector | None = None
        self._running = 0

    def register(self, llm: LLMService[Any], digits: DigitCollector | None = None) -> None:
        """Register the handlers of the tools :func:`context_tools` offers (but transfer).

        ``digits`` is the call's keypad, which ``collect_digits`` arms.
        """
        self._digits = digits
        for tool in self.agent.http_tools:
            llm.register_function(
                tool.name,
                self._http_handler(tool),
                timeout_secs=tool.timeout_s + _DEADLINE_MARGIN_S,
            )
        if self.agent.dtmf is not None:
            llm.register_function("collect_digits", self._collect_digits)

    def _http_handler(self, tool: HttpTool) -> Callable[[FunctionCallParams], Awaitable[None]]:
        async def handler(params: FunctionCallParams) -> None:
            await self.run_http(tool, params)

        return handler

    async def run_http(self, tool: HttpTool, params: FunctionCallParams) -> None:
        """Say the filler, run ``tool``, hand its outcome to the model, record the event."""
        first = self._running == 0
        self._running += 1
        started = time.monotonic()
        status = "error"
        try:
            if first:  # several tools of one answer share one filler
                await self._say(params, said(self.agent, self._language()).filler)
            status, result = await self._run(tool, params.arguments)
            if status != "ok" and hasattr(params.llm, "owe_answer"):
                params.llm.owe_answer(params.tool_call_id)
            await params.result_callback(for_the_model(status, result))
        except asyncio.CancelledError:
            # pipecat's deadline (it asks the model to answer), or the call cancelled it (an
            # interruption, the call's end): the caller's voice does not (the session mutes
            # the caller while a tool runs: FunctionCallUserMuteStrategy).
            timed_out = time.monotonic() - started >= tool.timeout_s + _DEADLINE_MARGIN_S - 0.5
            status = "timeout" if timed_out else "cancelled"
            if timed_out and hasattr(params.llm, "owe_answer"):
                params.llm.owe_answer(params.tool_call_id)
            raise
        finally:
            self._running -= 1
            duration = round(time.monotonic() - started, 3)
            try:
                await self._event(
                    CallEventType.TOOL_CALLED, name=tool.name, duration_s=duration, status=status
                )
            except Exception:  # a record that could not be made never ends the call
                log.exception("tool event not recorded", extra={"tool": tool.name})

    @staticmethod
    async def _say(params: FunctionCallParams, text: str) -> None:
        """Have the agent say ``text`` now (kept out of the model's context)."""
        try:
            await params.llm.push_frame(TTSSpeakFrame(text, append_to_context=False))
        except Exception:  # the tool still runs; the caller waits a little in silence
            log.exception("filler not said")

    async def _run(self, tool: HttpTool, arguments: Mapping[str, Any]) -> tuple[str, str]:
        if self.runner is None:
            return "error", "tools are not available on this platform"
        try:
            outcome = await self.runner.run(self.tenant, self.call_id, tool, arguments)
        except Exception:  # the runner never raises; if it does, the call goes on
            log.exception("tool runner failed", extra={"tool": tool.name})
            return "error", "the tool failed"
        return outcome.status, outcome.result

    async def _collect_digits(self, params: FunctionCallParams) -> None:
        """Arm the keypad; say the model's prompt, if any; the digits come as the next turn."""
        if self._digits is None:
            await params.result_callback({"ok": False, "reason": "no keypad on this call"})
            return
        self._digits.arm()
        prompt = params.arguments.get("prompt")
        await params.result_callback(
            {"ok": True, "waiting_for": "keypad"},
            properties=FunctionCallResultProperties(run_llm=False),
        )
        if isinstance(prompt, str) and prompt.strip():
            await params.llm.push_frame(TTSSpeakFrame(prompt.strip()[:300]))
