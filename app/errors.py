"""Errors of the composition root; each carries a stable ``code``."""


class AppError(Exception):
    """Base error of the composition root (settings, start-up, the CLI)."""

    code = "app_error"


class PlatformError(AppError):
    """The platform cannot start or a command cannot run; the message says what to do."""

    code = "platform_error"
