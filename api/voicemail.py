"""A carrier's answering-machine detection result, whichever process its webhook reached.

The result is folded into the call's record at once (with a ``voicemail`` event); a machine is
then sent to the process running the call's media (``CommandBus``, action ``voicemail``). The
result may come before the media stream is up: the command is tried again for a few seconds
in the background, so the carrier's webhook is answered at once. A result about a call that
is over is recorded and nothing else.
"""

from __future__ import annotations

import asyncio
import logging

from api.webhooks import CarrierDeps
from carriers.base import AnsweredBy, MachineDetection
from cluster.commands import Action, CallNotLive, CommandBus, CommandError

log = logging.getLogger(__name__)
#: How long, and how often, a machine result waits for the call's media to be held somewhere.
RETRY_FOR_S, RETRY_EVERY_S = 10.0, 0.25
_pending: set[asyncio.Task[None]] = set()


async def machine_detected(
    deps: CarrierDeps, carrier: str, detection: MachineDetection, now: float
) -> str | None:
    """Record ``detection`` on its call and, for a machine, tell the call; our call id."""
    call_id = await deps.calls.by_carrier_id(carrier, detection.carrier_call_id)
    if call_id is None:
        log.warning("machine detection for an unknown call", extra={"carrier": carrier})
        return None
    got = await deps.calls.machine_detected(call_id, detection, now)
    if got is None:
        return None
    state, merged = got
    log.info(
        "machine detection",
        extra={
            "call_id": call_id,
            "answered_by": merged.answered_by,
            "result": detection.result,
            "action": merged.action,
        },
    )
    if state.is_final:
        log.info("machine detection about a call that is over: recorded only")
        return call_id
    if merged.answered_by != AnsweredBy.MACHINE or not merged.action:
        return call_id  # a person (or nobody knows): the conversation goes on
    if deps.commands is None:
        log.warning("no live-call commands here: the machine result is only recorded")
        return call_id
    task = asyncio.get_running_loop().create_task(_tell(deps.commands, call_id))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return call_id


async def _tell(commands: CommandBus, call_id: str) -> None:
    """Send the ``voicemail`` command, again while no process holds the call yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RETRY_FOR_S
    while True:
        try:
            result = await commands.send(call_id, Action.VOICEMAIL)
        except CallNotLive:
            if loop.time() >= deadline:
                log.warning(
                    "machine result: the call never reached a process", extra={"call_id": call_id}
                )
                return
            await asyncio.sleep(RETRY_EVERY_S)
            continue
        except CommandError as e:
            log.warning("machine result not delivered", extra={"call_id": call_id, "error": e.code})
            return
        except Exception:
            log.exception("machine result not delivered", extra={"call_id": call_id})
            return
        log.info("machine result delivered", extra={"call_id": call_id, "result": result})
        return
