"""The calls whose media runs in this process, and the live-call actions run on them.

``voice/transport.run_stream`` registers each running session here through its
:class:`~voice.transport.LiveRegistry` Protocol (voice never imports cluster); registering a
call also lists it under this process's :class:`~cluster.node.Node`.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING

from voice.errors import TransferRefused
from voice.errors import TransferUnavailable as NoTransfer

if TYPE_CHECKING:
    from cluster.node import Node
    from voice.transport import LiveCall

log = logging.getLogger(__name__)


class Action(StrEnum):
    """What a live-call command asks of a call."""

    HANGUP = "hangup"  # the agent says its farewell, then the call ends at the carrier
    STOP_RECORDING = "stop_recording"  # as on the caller's objection: stopped and deleted
    TRANSFER = "transfer"  # the caller is handed to the agent's transfer number
    VOICEMAIL = "voicemail"  # the carrier's detection reported: act on the call's choice


class CommandError(Exception):
    """A live-call command that could not be run; ``code`` is stable."""

    code = "command_failed"


class CallNotLive(CommandError):
    """The call is over, or no process runs its media."""

    code = "call_not_live"


class CommandTimeout(CommandError):
    """The process running the call's media did not answer in time."""

    code = "command_timeout"


class TransferUnavailable(CommandError):
    """The call cannot be transferred: its agent has no transfer number, or it is ending."""

    code = "transfer_unavailable"


class TransferDenied(CommandError):
    """Routing, the tenant's limits or the carrier refused the transfer; ``code`` says which."""

    code = "transfer_refused"

    def __init__(self, detail: str = "", code: str | None = None) -> None:
        """Refused for ``code`` (a routing, limit or carrier code), explained by ``detail``."""
        super().__init__(detail)
        if code:
            self.code = code


#: The stable codes a refused transfer carries (``telephony.transfer``).
TRANSFER_REFUSALS = frozenset(
    {
        "transfer_refused",
        "route_refused",
        "destination_refused",
        "invalid_number",
        "limit_exceeded",
        "carrier_failed",
        "transfer_failed",
    }
)

#: The error of each code a reply may carry.
ERRORS: dict[str, type[CommandError]] = {
    e.code: e for e in (CommandError, CallNotLive, CommandTimeout, TransferUnavailable)
}


def command_error(code: str, detail: str) -> CommandError:
    """The error a reply's ``code`` names (a refused transfer keeps its own code)."""
    if code in TRANSFER_REFUSALS:
        return TransferDenied(detail, code)
    return ERRORS.get(code, CommandError)(detail)


class LiveCalls:
    """Call id -> the running session's handle, in this process."""

    def __init__(self, node: Node | None = None) -> None:
        """Calls attached here are listed under ``node`` (none: this process alone knows)."""
        self.node = node
        self._calls: dict[str, LiveCall] = {}

    def __len__(self) -> int:
        """Calls whose media runs here now."""
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        """Whether ``call_id``'s media runs here."""
        return call_id in self._calls

    async def attach(self, call_id: str, call: LiveCall) -> None:
        """``call``'s session runs here from now on."""
        self._calls[call_id] = call
        if self.node is not None:
            await self.node.carry(call_id)

    async def detach(self, call_id: str) -> None:
        """The session of ``call_id`` has ended."""
        self._calls.pop(call_id, None)
        if self.node is not None:
            await self.node.drop(call_id)

    async def run(self, call_id: str, action: Action) -> str:
        """Run ``action`` on the call's session here; what happened.

        Raises:
            CallNotLive: the call's media does not run here.
            TransferUnavailable: a transfer of a call whose agent has no transfer number.
            TransferDenied: a transfer refused by routing, the limits or the carrier.
        """
        call = self._calls.get(call_id)
        if call is None or call.media_over:
            raise CallNotLive("the call is over or no process holds it")
        if action is Action.TRANSFER:
            return await self._transfer(call)
        if action is Action.VOICEMAIL:
            return await call.voicemail()
        if action is Action.HANGUP:
            await call.hang_up("api")
            return "hung_up"
        if await call.stop_recording("api"):
            return "recording_stopped"
        return "not_recording"

    @staticmethod
    async def _transfer(call: LiveCall) -> str:
        """Admit the transfer of ``call`` (``transferring``: the hand-over goes on in the call).

        The session's refusals at admission as command errors.
        """
        try:
            return await call.transfer("api")
        except NoTransfer as e:
            raise TransferUnavailable(str(e)) from e
        except TransferRefused as e:
            raise TransferDenied(str(e), e.code) from e
