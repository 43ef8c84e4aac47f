"""Sinch Voice: signed callbacks, SVAML, the PCM stream codec, calling and Numbers APIs, simulator.

:class:`carriers.sinch.kit.SinchKit` is what the platform uses of it.
"""
