"""The media loop's edges without a network: a stream's opening, the announcement's clock."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from carriers.base import StreamStart
from carriers.playback import PlaybackAcks
from voice.playback import MARK_GRACE_S, HeardClock
from voice.processors import ANNOUNCEMENT_MARK
from voice.transport import CLOSE_BAD_DATA, first_message, start_reader


class Gone(Exception):
    """How a web framework says the peer went away (its own exception type)."""


class FakeSocket:
    """A carrier's media socket: scripted text messages, then the peer gone."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = [json.dumps(m) for m in messages]
        self.accepted = False
        self.closed: tuple[int, str | None] | None = None

    async def accept(self) -> None:
        self.accepted = True

    async def receive_text(self) -> str:
        if not self.messages:
            raise Gone("disconnected")
        return self.messages.pop(0)

    async def send_text(self, data: str) -> None:
        raise AssertionError("nothing is sent while the stream opens")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)


def start_of(message: dict[str, Any]) -> StreamStart:
    return StreamStart(message["streamSid"], message["callSid"], message.get("parameters", {}))


READ = start_reader(json.loads, start_of)


async def test_a_stream_opens_with_connected_then_start() -> None:
    ws = FakeSocket(
        {"event": "connected"},
        {"event": "start", "streamSid": "MZ1", "callSid": "CA1", "parameters": {"call_id": "c"}},
    )
    start = await first_message(ws, READ)
    assert ws.accepted and ws.closed is None
    assert start == StreamStart("MZ1", "CA1", {"call_id": "c"})


async def test_bad_opening_data_closes_the_socket_and_a_gone_peer_does_not() -> None:
    bad = FakeSocket({"event": "media"})
    assert await first_message(bad, READ) is None
    assert bad.closed == (CLOSE_BAD_DATA, "media before start")
    gone = FakeSocket({"event": "connected"})
    assert await first_message(gone, READ) is None
    assert gone.accepted and gone.closed is None


class Codec(PlaybackAcks):
    acknowledges_playback = True


async def test_the_announcement_is_heard_when_its_mark_comes_back_not_sooner() -> None:
    heard: list[int] = []

    async def on_heard(position: int) -> None:
        heard.append(position)

    codec = Codec()
    clock = HeardClock(codec, lambda: 0, on_heard)
    assert codec.on_played == clock.marked
    clock.sending(time.monotonic(), 0.2)
    clock.marked(ANNOUNCEMENT_MARK, 111)  # before the audio can have played: not trusted
    await asyncio.sleep(0.05)
    assert heard == []
    codec.received = 222
    await asyncio.sleep(0.25)
    assert heard == [222]  # at the earliest time, at what had come in by then
    clock.marked(ANNOUNCEMENT_MARK, 333)
    await asyncio.sleep(0.01)
    assert heard == [222]  # once
    await clock.stop()


async def test_without_acknowledgements_the_audio_s_duration_decides() -> None:
    heard: list[int] = []

    async def on_heard(position: int) -> None:
        heard.append(position)

    clock = HeardClock(None, lambda: 42, on_heard)
    clock.sending(time.monotonic(), 0.05)
    await asyncio.sleep(0.15)
    assert heard == [42] and MARK_GRACE_S > 0.15
    await clock.stop()
