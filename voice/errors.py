"""Errors of the call pipeline; each carries a stable ``code``."""

from __future__ import annotations


class VoiceError(Exception):
    """Base error of the call pipeline."""

    code = "voice_error"


class AnnouncementIncomplete(VoiceError, ValueError):
    """The announcement lacks a required part (or its language has no rules)."""

    code = "announcement_incomplete"

    def __init__(self, language: str, missing: tuple[str, ...], *, checkable: bool = True) -> None:
        """``missing``: the parts not found; ``checkable``: whether ``language`` has rules."""
        self.language, self.missing = language, missing
        if not checkable:
            message = f"announcements in {language!r} cannot be checked yet"
        else:
            message = (
                f"the announcement must say, in {language!r}, that the caller is speaking with "
                f"an AI and that the call may be recorded; missing: {', '.join(missing)}"
            )
        super().__init__(message)


class PeerGone(VoiceError):
    """The carrier's media socket closed (or failed) before the stream had started."""

    code = "media_peer_gone"


class TransferUnavailable(VoiceError):
    """The call cannot be transferred: its agent has no transfer number, or it is ending."""

    code = "transfer_unavailable"


class TransferRefused(VoiceError):
    """A transfer the platform will not make; ``code`` says why (routing, limits, carrier)."""

    code = "transfer_refused"

    def __init__(self, code: str, detail: str) -> None:
        """Refused for the stable reason ``code``, explained by ``detail``."""
        super().__init__(detail)
        self.code = code


class PhraseTableError(VoiceError, ValueError):
    """A phrase table (voice/lang/*.toml) lacks a key or has a bad value."""

    code = "phrase_table_invalid"

    def __init__(self, file: str, key: str, problem: str) -> None:
        """``key`` of ``file`` has ``problem``."""
        self.file, self.key = file, key
        super().__init__(f"phrase table {file}: {key} {problem}")
