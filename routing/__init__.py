"""Which tenant and agent answer a number, and by which carrier: the directory and the policy."""

from routing.directory import (
    DEFAULT_ANNOUNCEMENT,
    DEFAULT_GREETING,
    DEFAULT_TENANT,
    Agent,
    Directory,
    Route,
    normalise_number,
)
from routing.errors import AgentExists, AgentNotFound, InvalidNumber, NumberTaken, RoutingError

__all__ = [
    "DEFAULT_ANNOUNCEMENT",
    "DEFAULT_GREETING",
    "DEFAULT_TENANT",
    "Agent",
    "AgentExists",
    "AgentNotFound",
    "Directory",
    "InvalidNumber",
    "NumberTaken",
    "Route",
    "RoutingError",
    "normalise_number",
]
