"""A range of ports (the agent's `[ports]`): its own module, so the agent's config can name it
without importing port allocation."""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class PortRange:
    """Ports `first` to `last`, both included."""

    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def from_random_point(self) -> list[int]:
        """Every port of the range, from a random one round to the one before it: agents sharing
        a host (a demo next to an installed agent) then rarely race for the same free port
        between checking it and their client binding it."""
        start = random.randint(self.first, self.last)
        return [*range(start, self.last + 1), *range(self.first, start)]
