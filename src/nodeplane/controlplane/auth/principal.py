"""Who is calling, and what they may do (DESIGN §7)."""

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden


class Role(StrEnum):
    """A member's role in an organization."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class ApiKeyKind(StrEnum):
    """Executor keys drive an executor; personal keys act as the user who made them."""

    EXECUTOR = "executor"
    PERSONAL = "personal"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    kind: str  # "user" or "executor"
    organization_id: UUID | None
    label: str
    user_id: UUID | None = None
    role: Role | None = None
    is_system_admin: bool = False
    api_key_id: UUID | None = None
    executor_id: UUID | None = None
    session_id: UUID | None = None

    @property
    def is_executor(self) -> bool:
        """True for an executor API key."""
        return self.kind == "executor"

    @property
    def can_mutate(self) -> bool:
        """Owners and admins change the fleet; members only read."""
        return self.kind == "user" and self.role in (Role.OWNER, Role.ADMIN)


def require_principal(principal: Principal | None) -> Principal:
    """The caller, or `unauthenticated`."""
    if principal is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "sign in or send a valid API key")
    return principal


def require_member(principal: Principal | None) -> Principal:
    """A user who belongs to an organization (any role)."""
    p = require_principal(principal)
    if p.kind != "user" or p.organization_id is None or p.role is None:
        raise forbidden("this needs a member of an organization")
    return p


def require_mutator(principal: Principal | None) -> Principal:
    """An owner or admin of the caller's organization."""
    p = require_member(principal)
    if not p.can_mutate:
        raise forbidden("only owners and admins can change this")
    return p


def require_executor(principal: Principal | None) -> Principal:
    """An executor API key."""
    p = require_principal(principal)
    if not p.is_executor or p.organization_id is None:
        raise forbidden("this needs an executor API key")
    return p
