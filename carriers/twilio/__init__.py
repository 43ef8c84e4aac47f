"""Twilio Programmable Voice: webhook signatures, TwiML, the Media Streams codec, a simulator."""

from carriers.twilio import media, signature, webhook

__all__ = ["media", "signature", "webhook"]
