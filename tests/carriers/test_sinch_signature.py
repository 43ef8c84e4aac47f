"""Sinch callback signing: the vector of shared/docs/carriers.md, tampering and staleness."""

from __future__ import annotations

import datetime as dt

import pytest

from carriers.sinch.signature import content_md5, sign, string_to_sign, verify

KEY = "669E367E-6BBA-48AB-AF15-266871C28135"
SECRET = "BeIukql3pTKJ8RGL5zo0DA=="
BODY = b'{"event":"ace","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","timestamp":"2014-09-24T10:59:41Z","version":1}'
TS = "2014-09-24T10:59:41Z"
PATH = "/sinch/callback/ace"
SIGNATURE = "Tg6fMyo8mj9pYfWQ9ssbx3Tc1BNC87IEygAfLbJqZb4="
NOW = dt.datetime(2014, 9, 24, 11, 1, 0, tzinfo=dt.UTC)


def headers(**over: str) -> dict[str, str]:
    base = {
        "authorization": f"application {KEY}:{SIGNATURE}",
        "content-type": "application/json",
        "x-timestamp": TS,
    }
    return {**base, **over}


def test_the_documented_vector() -> None:
    assert content_md5(BODY) == "REWF+X220L4/Gw1spXOU7g=="
    assert string_to_sign("POST", PATH, BODY, "application/json", TS) == (
        f"POST\nREWF+X220L4/Gw1spXOU7g==\napplication/json\nx-timestamp:{TS}\n{PATH}"
    )
    assert sign(SECRET, "POST", PATH, BODY, "application/json", TS) == SIGNATURE
    assert verify("POST", PATH, BODY, headers(), KEY, SECRET, NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(body=BODY.replace(b"ace", b"dice")), "does not match"),
        (dict(path="/sinch/callback/dice"), "does not match"),
        (dict(hdrs=headers(authorization=f"application {KEY}:{'A' * 44}")), "does not match"),
        (
            dict(hdrs=headers(authorization=f"application OTHER-KEY:{SIGNATURE}")),
            "another application",
        ),
        (dict(hdrs=headers(authorization=f"Basic {KEY}:{SIGNATURE}")), "malformed"),
        (dict(hdrs={k: v for k, v in headers().items() if k != "authorization"}), "missing"),
        (dict(hdrs=headers(**{"content-type": "text/plain"})), "does not match"),
        (dict(hdrs=headers(**{"x-timestamp": "yesterday"})), "x-timestamp"),
        (dict(now=NOW + dt.timedelta(minutes=6)), "stale"),
        (dict(now=NOW - dt.timedelta(minutes=8)), "stale"),  # from the future
        (dict(secret="not base64!"), "base64"),
    ],
)
def test_forged_tampered_and_stale_callbacks_are_refused(change: dict, reason: str) -> None:  # type: ignore[type-arg]
    verdict = verify(
        "POST", change.get("path", PATH), change.get("body", BODY), change.get("hdrs", headers()),
        KEY, change.get("secret", SECRET), change.get("now", NOW),
    )  # fmt: skip
    assert not verdict and reason in verdict.reason


def test_window_is_configurable() -> None:
    late = NOW + dt.timedelta(minutes=20)
    assert not verify("POST", PATH, BODY, headers(), KEY, SECRET, late)
    assert verify("POST", PATH, BODY, headers(), KEY, SECRET, late, window_s=3600)
