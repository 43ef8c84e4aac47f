"""The browser harness (tests/browser.py) on a real headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, Browser, BrowserError, running_in_group

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_it_evaluates_waits_reports_errors_and_leaves_nothing_behind() -> None:
    async with Browser.launch() as browser:
        pid, profile = browser.proc.pid, browser.profile
        assert len(running_in_group(pid)) > 1  # the browser and its helper processes
        page = await browser.open("about:blank")
        assert await page.evaluate("1 + 1") == 2
        assert await page.evaluate("new Promise(r => setTimeout(() => r('later'), 50))") == "later"
        await page.evaluate("setTimeout(() => { window.done = 7 }, 100); 0")
        assert await page.wait_for("window.done", within=10) == 7
        with pytest.raises(BrowserError, match="still false"):
            await page.wait_for("window.never", within=0.5)
        with pytest.raises(BrowserError, match="nope"):
            await page.evaluate("Promise.reject(new Error('nope'))")
        await page.evaluate(
            "console.error('seen', 42); setTimeout(() => { throw new Error('boom') })"
        )
        await page.wait_for("true", within=1)
        await page.evaluate("new Promise(r => setTimeout(r, 100))")
        assert "seen 42" in page.errors
        assert any("boom" in e for e in page.errors), page.errors
        await page.close()
    assert not alive(pid)
    assert running_in_group(pid) == []
    assert not profile.exists()
