"""The composition root: settings, process start-up, the platform object, ``serve`` and the CLI.

``core.build_platform`` is the one factory: it builds every collaborator from ``settings.Settings``
for ``serve`` (``platform.Platform``, with the speech models) and for each command of the CLI
(``core.Core``).
"""
