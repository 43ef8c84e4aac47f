"""BONMONIQ_SIP_TRUSTED: the PBXs and trunks whose INVITEs are taken without a registration there."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_trusted_peers_are_read_from_the_environment_and_normalized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BONMONIQ_SIP_TRUSTED", " 203.0.113.0/28, 192.0.2.7 ,2001:db8::/32,")
    settings = Settings()
    assert settings.sip_trusted_peers == ["203.0.113.0/28", "192.0.2.7/32", "2001:db8::/32"]
    assert Settings(sip_trusted="").sip_trusted_peers == []


@pytest.mark.parametrize("bad", ["pbx.example.com", "10.0.0.1/8", "300.1.2.3", "10.0.0.0/33"])
def test_a_bad_trusted_peer_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(sip_trusted=f"192.0.2.7,{bad}")
    assert "BONMONIQ_SIP_TRUSTED" in str(e.value) and repr(bad) in str(e.value)
