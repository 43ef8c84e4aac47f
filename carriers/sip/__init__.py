"""SIP: the signalling stack (aiosipua) and, beside it, the media of SIP calls."""
