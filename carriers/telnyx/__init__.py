"""Telnyx Call Control: Ed25519 webhooks, events, the media codec, REST, a simulator.

:class:`carriers.telnyx.kit.TelnyxKit` is what the platform uses of it.
"""
