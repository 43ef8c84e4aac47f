"""The customer's systems: HTTP tools an agent calls and webhooks the platform sends, signed."""
