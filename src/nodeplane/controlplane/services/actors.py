"""Who an event or a revision is attributed to."""

from dataclasses import dataclass
from uuid import UUID

from nodeplane.controlplane.auth.principal import Principal


@dataclass(frozen=True)
class Actor:
    """The attributed author: a user, an executor, or the control plane itself."""

    type: str  # "user" | "executor" | "system"
    id: UUID | None
    label: str


SYSTEM = Actor("system", None, "nodeplane")


def actor_of(principal: Principal) -> Actor:
    """The actor a principal's actions are attributed to."""
    if principal.is_executor:
        return Actor("executor", principal.executor_id, principal.label)
    return Actor("user", principal.user_id, principal.label)
