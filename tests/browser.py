"""Headless Chromium (Debian's /usr/bin/chromium) driven over the Chrome DevTools Protocol.

One browser process per :class:`Browser`, in its own process group and with a temporary
profile; :meth:`Browser.open` gives a :class:`Page` (a tab attached in flat mode over the
browser's one WebSocket). Everything is asynchronous: the tests that use it run on asyncio.

    async with Browser.launch(fake_audio=wav) as browser:
        page = await browser.open("http://127.0.0.1:8000/try/agt_1#token=...")
        await page.evaluate("window.bonmoniqCall()")
        await page.wait_for("window.bonmoniq.soundMs > 500", within=60)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

#: Debian's Chromium launcher.
CHROMIUM = "/usr/bin/chromium"
#: What a test browser needs: no network of its own, fake media devices, no prompts.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--mute-audio",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # The page's ICE candidates must be the loopback address the server can reach.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--remote-debugging-port=0",
)


class BrowserError(Exception):
    """The browser did not start, or a DevTools command or page script failed."""


class Browser:
    """A headless Chromium and its DevTools connection."""

    def __init__(self, proc: asyncio.subprocess.Process, profile: Path) -> None:
        self.proc = proc
        self.profile = profile
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls, fake_audio: Path | None = None, extra: tuple[str, ...] = (), within: float = 30
    ) -> AsyncIterator[Browser]:
        """A started browser (the microphone plays ``fake_audio``, a WAV, once); closed on exit."""
        if not Path(CHROMIUM).exists():
            raise BrowserError(f"{CHROMIUM} is missing (Debian package chromium)")
        profile = Path(tempfile.mkdtemp(prefix="bonmoniq-chromium-"))
        flags = [*FLAGS, f"--user-data-dir={profile}", *extra]
        if fake_audio is not None:
            flags.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
        with (profile / "stderr.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                CHROMIUM,
                *flags,
                "about:blank",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its own process group: killed whole on close
            )
        browser = cls(proc, profile)
        try:
            await browser._connect(within)
            yield browser
        finally:
            await browser.close()

    async def _connect(self, within: float) -> None:
        active = self.profile / "DevToolsActivePort"
        async with asyncio.timeout(within):
            while True:
                if active.exists() and len(active.read_text().splitlines()) >= 2:
                    break
                if self.proc.returncode is not None:
                    raise BrowserError(f"chromium exited ({self.proc.returncode}): {self.stderr()}")
                await asyncio.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        self._ws = await connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        self._reader = asyncio.create_task(self._read())

    def stderr(self) -> str:
        """The end of the browser's own log (for a failure's message)."""
        log = self.profile / "stderr.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    waiter = self._waiting.pop(message["id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                    page._event(message["method"], message.get("params", {}))
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(BrowserError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One DevTools command's result (``session``: a page's, else the browser's)."""
        if self._ws is None or (self._reader is not None and self._reader.done()):
            raise BrowserError("the browser is closed")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[message["id"]] = waiter
        await self._ws.send(json.dumps(message))
        reply = await waiter
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def open(self, url: str) -> Page:
        """A new tab at ``url``, once its page has loaded."""
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = await self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, target, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Runtime.enable", "Page.enable", "Log.enable"):
            await page.send(domain)
        await page.goto(url)
        return page

    async def close(self) -> None:
        """Closes the connection, kills the browser's process group, removes the profile."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.send(json.dumps({"id": next(self._ids), "method": "Browser.close"}))
                    await self.proc.wait()
            with contextlib.suppress(Exception):
                await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        # Renderers, GPU and utility processes share the launcher's process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while True:
                    if not running_in_group(self.proc.pid):
                        break
                    await asyncio.sleep(0.05)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: navigation, script evaluation and what its console reported."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        #: Console errors, uncaught exceptions and browser log errors, as text.
        self.errors: list[str] = []
        self._loaded = asyncio.Event()

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(_text(a) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(_text(details.get("exception", {})) or details.get("text", ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command to this tab."""
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str, within: float = 30) -> None:
        """Navigates to ``url`` and waits for its load event."""
        self._loaded.clear()
        navigated = await self.send("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")
        async with asyncio.timeout(within):
            await self._loaded.wait()

    async def evaluate(self, expression: str, within: float = 60) -> Any:
        """The value of ``expression`` (a promise is awaited); a thrown error is a BrowserError."""
        async with asyncio.timeout(within):
            reply = await self.send(
                "Runtime.evaluate",
                {"expression": expression, "awaitPromise": True, "returnByValue": True},
            )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise BrowserError(_text(details.get("exception", {})) or details.get("text", ""))
        return reply["result"].get("value")

    async def wait_for(self, expression: str, within: float, every: float = 0.1) -> Any:
        """The first true value of ``expression``, polled until ``within`` seconds have passed."""
        try:
            async with asyncio.timeout(within):
                while True:
                    if value := await self.evaluate(expression):
                        break
                    await asyncio.sleep(every)
        except TimeoutError:
            raise BrowserError(f"still false after {within} s: {expression}") from None
        return value

    async def close(self) -> None:
        """Closes the tab."""
        await self.browser.send("Target.closeTarget", {"targetId": self.target})
        self.browser._pages.pop(self.session, None)


def running_in_group(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that have not exited (zombies left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _text(remote: dict[str, Any]) -> str:
    """A Runtime.RemoteObject as text."""
    if "value" in remote:
        return str(remote["value"])
    return str(remote.get("description") or remote.get("unserializableValue") or "")
