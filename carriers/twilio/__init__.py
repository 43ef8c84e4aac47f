"""Twilio Programmable Voice: signatures, TwiML, the Media Streams codec, REST, a simulator.

:class:`carriers.twilio.kit.TwilioKit` is what the platform uses of it.
"""
