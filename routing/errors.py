"""Errors of the number directory; each carries a stable ``code``."""


class RoutingError(Exception):
    """Base error of the routing package."""

    code = "routing_error"


class InvalidNumber(RoutingError):
    """Not an E.164 phone number."""

    code = "invalid_number"


class AgentNotFound(RoutingError):
    """No agent of that name in the tenant."""

    code = "agent_not_found"


class AgentExists(RoutingError):
    """An agent of that name exists already."""

    code = "agent_exists"


class AgentInUse(RoutingError):
    """The agent still answers numbers."""

    code = "agent_in_use"


class NumberTaken(RoutingError):
    """The number already answers for another agent."""

    code = "number_taken"


class RouteRefused(RoutingError):
    """No carrier may serve the number (fail closed)."""

    code = "route_refused"


class DestinationRefused(RoutingError):
    """The destination's class (premium, satellite, high-risk...) is not allowed for the tenant."""

    code = "destination_refused"
