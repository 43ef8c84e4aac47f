"""Twilio Programmable Voice: webhook signatures, TwiML, the Media Streams codec, a simulator."""
