"""A scripted OpenAI-compatible server that answers as vLLM does: the language model's test double.

The embedded model is too small to call tools, so tests of tool calling and of the model's
post-call work talk to this server instead. It speaks vLLM's ``/v1/models`` and
``/v1/chat/completions`` (streamed and not) with the same JSON as vLLM's OpenAI server with
``--enable-auto-tool-choice`` and a tool parser (hermes): a first chunk with the role and empty
content, content one token-like piece per chunk, each tool call as a first delta carrying
``id`` (``chatcmpl-tool-<hex>``), ``type`` and the function's name, then argument fragments,
a last chunk with ``finish_reason`` ``"tool_calls"`` (or ``"stop"``/``"length"``), the usage
chunk with empty ``choices`` when ``stream_options.include_usage`` asks for it, and
``data: [DONE]``. Bodies are checked as vLLM's request model and chat template would: an
unknown model is vLLM's 404, a malformed message list its 400.

What it answers is the test's script: :attr:`ScriptedLLM.replies` is a queue of
:class:`Reply` (each request takes the next; an empty queue gives :attr:`ScriptedLLM.default`)
or a callable ``body -> Reply`` (it may look at the messages and tools). Every request body is
recorded in :attr:`ScriptedLLM.requests`. The server runs in its own thread with its own event
loop, so a test (or a platform started synchronously, probing it) never blocks it.

    llm.script(Reply.call("find_order", order="12345"), Reply.say("It ships today."))
    ... a call ...
    first, second = llm.chat_requests()
    assert second["messages"][-1]["role"] == "tool"
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llm.server import free_port
from tests.fakes.threaded import ThreadedServer

#: The model name the server serves (``BONMONIQ_LLM_MODEL`` of a platform pointed at it).
MODEL = "scripted-hermes"
#: The largest context vLLM would accept for the model (``/v1/models`` ``max_model_len``).
MAX_MODEL_LEN = 8192
#: Characters per argument fragment: vLLM streams a call's arguments as JSON diffs.
ARGUMENT_FRAGMENT = 7
_PIECE = re.compile(r"\s*\S+|\s+")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def tool_call_id() -> str:
    """An id as vLLM makes them (``make_tool_call_id``, the default "random" kind)."""
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool the model makes; ``arguments`` a mapping, or a raw (maybe broken) string."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str = field(default_factory=tool_call_id)

    @property
    def arguments_json(self) -> str:
        """The arguments as the model writes them (vLLM keeps the model's JSON text)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), ensure_ascii=False)


@dataclass(frozen=True)
class Reply:
    """What the model answers to one request.

    ``text`` is the content (streamed piece by piece); ``tool_calls`` follow it, as a hermes
    model writes its ``<tool_call>`` blocks after any text. ``status`` other than 200 answers
    vLLM's error body instead. ``delay_s`` waits before the first chunk (a slow model);
    ``finish_reason`` ``"length"`` plays a model cut at ``max_tokens``.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    status: int = 200
    delay_s: float = 0.0
    finish_reason: str | None = None

    @classmethod
    def say(cls, text: str, **kw: Any) -> Reply:
        """A plain answer."""
        return cls(text=text, **kw)

    @classmethod
    def call(cls, name: str, _text: str = "", **arguments: Any) -> Reply:
        """A call of tool ``name`` with ``arguments`` (after ``_text``, if any)."""
        return cls(text=_text, tool_calls=(ToolCall(name, arguments),))

    @classmethod
    def error(cls, status: int = 500) -> Reply:
        """vLLM's error answer with ``status``."""
        return cls(status=status)

    @property
    def finish(self) -> str:
        """The finish reason vLLM sends for this reply."""
        if self.finish_reason:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


Script = Callable[[dict[str, Any]], Reply] | deque[Reply]


class RequestRejected(Exception):
    """A body vLLM would refuse: its status and message."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def check_body(body: Any, model: str) -> None:
    """Refuse what vLLM refuses: another model, no messages, a malformed message or tool."""
    if not isinstance(body, dict):
        raise RequestRejected(400, "the body must be a JSON object")
    if body.get("model") != model:
        raise RequestRejected(
            404, f"The model `{body.get('model')}` does not exist.", "NotFoundError"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(400, "messages: a non-empty list is required")
    called: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise RequestRejected(400, f"messages[{i}]: unknown role")
        if m["role"] == "assistant":
            for call in m.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(fn, dict)
                    or call.get("type") != "function"
                    or not call.get("id")
                    or not isinstance(fn.get("name"), str)
                    or not isinstance(fn.get("arguments"), str)
                ):
                    raise RequestRejected(400, f"messages[{i}].tool_calls: malformed")
                called.add(call["id"])
        if m["role"] == "tool":
            if m.get("tool_call_id") not in called:
                raise RequestRejected(400, f"messages[{i}]: tool result for no tool call")
            if not isinstance(m.get("content"), str | list):
                raise RequestRejected(400, f"messages[{i}]: a tool result needs content")
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not fn.get("name"):
            raise RequestRejected(400, "tools: each is {type: function, function: {name, ...}}")
        if not isinstance(fn.get("parameters", {}), dict):
            raise RequestRejected(400, f"tools: {fn['name']} parameters must be an object")


def _pieces(text: str) -> list[str]:
    """``text`` in token-like pieces (each word with the space before it)."""
    return _PIECE.findall(text)


def _fragments(arguments: str) -> list[str]:
    return [
        arguments[i : i + ARGUMENT_FRAGMENT] for i in range(0, len(arguments), ARGUMENT_FRAGMENT)
    ]


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt = sum(len(json.dumps(m)) // 4 for m in body["messages"])
    completion = len(_pieces(reply.text)) + sum(
        1 + len(_fragments(c.arguments_json)) for c in reply.tool_calls
    )
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }


def stream_chunks(body: dict[str, Any], reply: Reply, model: str) -> Iterator[dict[str, Any]]:
    """The chunks vLLM streams for ``reply`` (without the ``data:`` framing)."""
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
        choice["finish_reason"] = finish
        if finish is not None:
            choice["stop_reason"] = None
        return {**head, "choices": [choice]}

    yield {**chunk({"role": "assistant", "content": ""}), "prompt_token_ids": None}
    for piece in _pieces(reply.text):
        yield chunk({"content": piece})
    for index, call in enumerate(reply.tool_calls):
        first = {"id": call.id, "type": "function", "index": index}
        yield chunk({"tool_calls": [{**first, "function": {"name": call.name}}]})
        for fragment in _fragments(call.arguments_json):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    # The last token (EOS, or </tool_call>'s end) carries no text of its own.
    yield chunk({} if reply.tool_calls else {"content": ""}, reply.finish)
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        yield {**head, "choices": [], "usage": _usage(body, reply)}


def completion(body: dict[str, Any], reply: Reply, model: str) -> dict[str, Any]:
    """The whole response vLLM returns for ``reply`` when ``stream`` is false."""
    calls = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments_json},
        }
        for c in reply.tool_calls
    ]
    message = {
        "role": "assistant",
        "reasoning_content": None,
        "content": reply.text or None,
        "tool_calls": calls,
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish,
                "stop_reason": None,
            }
        ],
        "usage": _usage(body, reply),
        "prompt_logprobs": None,
    }


def _error(status: int, message: str, kind: str) -> web.Response:
    """vLLM's ``ErrorResponse`` body."""
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


class ScriptedLLM(ThreadedServer):
    """The scripted server on ``127.0.0.1`` (a free port), in a thread of its own."""

    thread_name = "scripted-llm"

    def __init__(self, model: str = MODEL, default: Reply | None = None) -> None:
        """Serve ``model``; an empty queue of replies answers ``default``."""
        super().__init__()
        self.model = model
        self.default = default or Reply.say("Certainly.")
        self.replies: Script = deque()
        #: Every request body, in the order they came (``/v1/models`` requests excluded).
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The ``/v1`` base URL (``BONMONIQ_LLM_URL``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- the test's side --------------------------------------------------------------

    def script(self, *replies: Reply | Callable[[dict[str, Any]], Reply]) -> None:
        """Answer the next requests with ``replies`` in turn (or one callable); forget requests."""
        with self._lock:
            self.requests.clear()
            if len(replies) == 1 and not isinstance(replies[0], Reply):
                self.replies = replies[0]
            else:
                self.replies = deque(r for r in replies if isinstance(r, Reply))

    def chat_requests(self, with_tools: bool | None = None) -> list[dict[str, Any]]:
        """The chat requests so far; only those with (True) or without (False) tools if given."""
        with self._lock:
            seen = list(self.requests)
        if with_tools is None:
            return seen
        return [r for r in seen if bool(r.get("tools")) == with_tools]

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            script = self.replies
            if isinstance(script, deque):
                return script.popleft() if script else self.default
        return script(body)

    # -- the server -------------------------------------------------------------------

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "vllm",
                        "root": self.model,
                        "parent": None,
                        "max_model_len": MAX_MODEL_LEN,
                        "permission": [],
                    }
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            check_body(body, self.model)
        except RequestRejected as e:
            return _error(e.status, e.message, e.kind)
        except ValueError:
            return _error(400, "the body is not JSON", "BadRequestError")
        reply = self._next(body)
        if reply.status != 200:
            return _error(reply.status, "scripted failure", "InternalServerError")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if not body.get("stream"):
            return web.json_response(completion(body, reply, self.model))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        try:
            for chunk in stream_chunks(body, reply, self.model):
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:  # the client closed the stream (a cut answer): vLLM aborts
            pass
        return response

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
