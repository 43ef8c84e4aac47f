"""Live-call commands across processes over Redis pub/sub, answered with what happened.

Each process listens on ``node:{own id}:commands``. :meth:`CommandBus.send` reads which process
holds the call's media (the call's ``node`` field): this one runs the action at once; another
is sent ``{request_id, call_id, action}`` after the sender has subscribed to
``reply:{request_id}``, on which the holder publishes ``{request_id, result}`` or
``{request_id, error, detail}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

from redis.asyncio import Redis

from calls.store import CallStore
from cluster.live import (
    Action,
    CallNotLive,
    CommandError,
    CommandTimeout,
    LiveCalls,
    TransferDenied,
    TransferUnavailable,
    command_error,
)
from cluster.metrics import COMMANDS
from store import keys

log = logging.getLogger(__name__)
#: The listener's wait before subscribing again after a failure: doubled up to the maximum.
BACKOFF_S, MAX_BACKOFF_S = 0.1, 5.0

__all__ = [
    "Action",
    "CallNotLive",
    "CommandBus",
    "CommandError",
    "CommandTimeout",
    "TransferDenied",
    "TransferUnavailable",
]


class CommandBus:
    """Sends live-call commands to the process holding each call, and runs those sent here."""

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        live: LiveCalls,
        calls: CallStore,
        timeout_s: float,
    ) -> None:
        """This process is ``node_id``, its calls in ``live``; a reply is awaited ``timeout_s``."""
        self.redis = redis
        self.node_id = node_id
        self.live = live
        self.calls = calls
        self.timeout_s = timeout_s
        #: Set while the listener is subscribed.
        self.listening = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, call_id: str, action: Action) -> str:
        """Run ``action`` on the live call ``call_id``, wherever it runs; what happened.

        Raises:
            CallNotLive: the call is over, or no process holds it.
            CommandTimeout: its process did not answer in time.
            TransferUnavailable: a transfer of a call whose agent has no transfer number.
            TransferDenied: a transfer refused by routing, the limits or the carrier.
        """
        try:
            result = await self._send(call_id, action)
        except CommandError as e:
            COMMANDS.labels(str(action), e.code).inc()
            raise
        except Exception:
            COMMANDS.labels(str(action), "error").inc()
            raise
        COMMANDS.labels(str(action), result).inc()
        return result

    async def _send(self, call_id: str, action: Action) -> str:
        holder = await self.calls.holder(call_id)
        if holder is None:
            raise CallNotLive("the call is over or no process holds it")
        if holder == self.node_id:
            return await self.live.run(call_id, action)
        return await self._ask(holder, call_id, action)

    async def _ask(self, holder: str, call_id: str, action: Action) -> str:
        """Publish the command to ``holder`` and wait for its answer."""
        request_id = secrets.token_hex(12)
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(keys.command_reply(request_id))
            message = {"request_id": request_id, "call_id": call_id, "action": str(action)}
            heard = await self.redis.publish(keys.node_commands(holder), json.dumps(message))
            if not heard:
                if not await self.redis.exists(keys.node(holder)):
                    raise CallNotLive("the process that held the call is gone")
                raise CommandTimeout("the process holding the call is not listening")
            reply = await self._reply(pubsub, request_id)
        finally:
            await pubsub.aclose()
        if "error" in reply:
            raise command_error(str(reply["error"]), str(reply.get("detail", "")))
        return str(reply["result"])

    async def _reply(self, pubsub: Any, request_id: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while (left := deadline - loop.time()) > 0:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is None:
                continue
            reply = json.loads(message["data"])
            if isinstance(reply, dict) and reply.get("request_id") == request_id:
                return reply
        raise CommandTimeout(f"the process holding the call did not answer in {self.timeout_s} s")

    async def listen(self) -> None:
        """Run the commands sent to this process until cancelled; Redis errors are survived.

        A lost subscription is made again after a wait that doubles up to ``MAX_BACKOFF_S``.
        """
        backoff = BACKOFF_S
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(keys.node_commands(self.node_id))
                self.listening.set()
                backoff = BACKOFF_S
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._spawn(self._serve(str(message["data"])))
            except Exception as e:
                self.listening.clear()
                log.warning(
                    "command listener lost the state store: subscribing again",
                    extra={"error": str(e), "retry_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
            finally:
                self.listening.clear()
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already gone
                    log.debug("command subscription closed uncleanly", exc_info=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, raw: str) -> None:
        """Run one command sent here and publish its answer."""
        try:
            message = json.loads(raw)
            request_id = str(message["request_id"])
            call_id, action = str(message["call_id"]), Action(message["action"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed live-call command dropped")
            return
        reply: dict[str, Any] = {"request_id": request_id}
        try:
            reply["result"] = await self.live.run(call_id, action)
        except CommandError as e:
            reply |= {"error": e.code, "detail": str(e)}
        except Exception:
            log.exception("live-call command failed", extra={"call_id": call_id})
            reply |= {"error": CommandError.code, "detail": "the command failed"}
        try:
            await self.redis.publish(keys.command_reply(request_id), json.dumps(reply))
        except Exception as e:  # the sender times out
            log.warning("could not answer a live-call command", extra={"error": str(e)})
