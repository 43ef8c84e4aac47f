"""When the caller has heard the announcement, and by which byte of their own audio."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from carriers.playback import PlaybackAcks
from voice.processors import ANNOUNCEMENT_MARK

#: With a carrier that acknowledges playback, how long after the announcement could have
#: played the gate still waits for the acknowledgement before it opens anyway (a lost mark
#: must not hold the call; by then the carrier has played it, in real time).
MARK_GRACE_S = 3.0


class HeardClock:
    """Says once when the announcement has played to the caller.

    The carrier's acknowledgement of the announcement's mark decides; without one (Sinch),
    the time its audio takes after its first chunk left; with one that never comes, a grace
    later. An acknowledgement sooner than the audio can have played is not trusted.
    """

    def __init__(
        self,
        codec: PlaybackAcks | None,
        received: Callable[[], int],
        on_heard: Callable[[int], Awaitable[None]],
    ) -> None:
        """Listen to ``codec``'s marks; ``on_heard(position)`` is awaited once.

        ``received()`` is how much of the caller's audio has come in, the position used when
        no acknowledgement says it.
        """
        self._codec = codec
        self._received = received
        self._on_heard = on_heard
        self._heard = False
        self._earliest: float | None = None  # monotonic: it cannot have played before
        self._timer: asyncio.Task[None] | None = None
        if codec is not None:
            codec.on_played = self.marked

    def sending(self, at: float, duration_s: float) -> None:
        """The first chunk of ``duration_s`` of announcement left at monotonic ``at``."""
        self._earliest = at + duration_s
        acks = self._codec is not None and self._codec.acknowledges_playback
        self._schedule(self._earliest + (MARK_GRACE_S if acks else 0.0), None)

    def marked(self, name: str, position: int) -> None:
        """Codec callback: the carrier has played the audio sent before mark ``name``."""
        if name != ANNOUNCEMENT_MARK or self._earliest is None or self._heard:
            return
        if time.monotonic() < self._earliest:  # sooner than it can have played: not trusted
            self._schedule(self._earliest, None)
        else:
            self._schedule(0.0, position)

    async def stop(self) -> None:
        """Stop waiting (the call is over)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._timer

    def _schedule(self, at: float, position: int | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().create_task(self._heard_at(at, position))

    async def _heard_at(self, at: float, position: int | None) -> None:
        """At monotonic ``at``: the caller has heard the announcement, up to ``position``."""
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if self._heard:
            return
        self._heard = True
        if position is None:
            position = self._codec.received if self._codec is not None else self._received()
        await self._on_heard(position)
