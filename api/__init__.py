"""The HTTP edge: customer and carrier routes, middleware, problem+json and the app factory."""

__all__: list[str] = []
