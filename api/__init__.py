"""The FastAPI app, the ``bonmoniq`` CLI and the process runtime (Redis, LLM server, models)."""

__all__: list[str] = []
