"""The state store: the Redis key layout (:mod:`store.keys`), its settings and the connection."""

__all__: list[str] = []
