"""Errors of the model catalogue; each carries a stable ``code``."""


class ModelError(Exception):
    """Base error: a model cannot be used."""

    code = "model_error"


class ModelMissing(ModelError):
    """A model file is not installed."""

    code = "model_missing"


class ModelCorrupt(ModelError):
    """A model file does not match its pinned checksum or size."""

    code = "model_corrupt"


class ModelNotPinned(ModelError):
    """A catalogue entry has no sha256 pin, so it is refused."""

    code = "model_not_pinned"
