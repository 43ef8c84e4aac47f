"""Telephony: accepting inbound calls, placing outbound ones, numbers, caps on calls."""
