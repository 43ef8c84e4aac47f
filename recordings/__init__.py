"""Encrypted recordings and transcripts and the data lifecycle (issue 5: not built yet).

Until then nothing is recorded: the spine stores transcripts in Redis only (see
``calls.store``), and no audio is written anywhere.
"""

__all__: list[str] = []
