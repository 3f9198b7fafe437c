"""Managing the members of an organization: remove, change role, end sessions.

Owners and admins manage members; only owners act on owners or make owners; an organization
never loses its last owner. Acting on yourself follows the same rules: removing yourself is
leaving the organization and demoting yourself takes effect at once, and neither is allowed to
the last owner. Every change is an event with the actor and the member it concerned.
"""

from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from sqlalchemy import CursorResult, delete, func, select, update

from nodeplane.controlplane.auth.principal import (
    ApiKeyKind,
    Principal,
    Role,
    require_mutator,
)
from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden, not_found
from nodeplane.controlplane.services.actors import actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.store.database import UnitOfWork
from nodeplane.controlplane.store.models import ApiKey, Member, Organization, Session, User
from nodeplane.controlplane.store.types import utcnow


@dataclass(frozen=True)
class MemberChange:
    """A member after (or, once removed, as of) the change, and the access that was ended."""

    member: Member
    user: User
    sessions_ended: int = 0
    api_keys_revoked: int = 0


async def _target(uow: UnitOfWork, p: Principal, member_id: UUID) -> tuple[Member, User]:
    # Every change of membership takes the organization's row lock first, so two of them in one
    # organization (say two owners demoting each other) run one after the other, never deadlock.
    await uow.session.execute(
        select(Organization.id).where(Organization.id == p.organization_id).with_for_update()
    )
    row = (
        await uow.session.execute(
            select(Member, User)
            .join(User, User.id == Member.user_id)
            .where(Member.id == member_id, Member.organization_id == p.organization_id)
        )
    ).first()
    if row is None:
        # Members of other organizations look exactly like ids that exist nowhere.
        raise not_found("member")
    member, user = row.tuple()
    return member, user


def _may_act_on(p: Principal, member: Member) -> None:
    if member.role == Role.OWNER.value and p.role is not Role.OWNER:
        raise forbidden("only owners can act on owners")


async def _keep_an_owner(uow: UnitOfWork, member: Member) -> None:
    """Refuse a change that would leave the organization without an owner."""
    if member.role != Role.OWNER.value:
        return
    owners = await uow.session.scalar(
        select(func.count())
        .select_from(Member)
        .where(Member.organization_id == member.organization_id, Member.role == Role.OWNER.value)
    )
    if (owners or 0) <= 1:
        raise DomainError(
            ErrorCode.INVALID_ACTION,
            "an organization needs at least one owner: make another member owner first",
        )


async def _end_access(uow: UnitOfWork, member: Member) -> tuple[int, int]:
    """End the member's sessions in this organization and revoke their personal keys here."""
    sessions = await uow.session.execute(
        delete(Session).where(
            Session.user_id == member.user_id, Session.organization_id == member.organization_id
        )
    )
    keys = await uow.session.execute(
        update(ApiKey)
        .where(
            ApiKey.organization_id == member.organization_id,
            ApiKey.created_by_id == member.user_id,
            ApiKey.kind == ApiKeyKind.PERSONAL.value,
            ApiKey.enabled.is_(True),
        )
        .values(enabled=False, revoked_at=utcnow())
    )
    return (
        cast(CursorResult[Any], sessions).rowcount,
        cast(CursorResult[Any], keys).rowcount,
    )


async def remove_member(
    uow: UnitOfWork, principal: Principal | None, member_id: UUID
) -> MemberChange:
    """Remove a member: their sessions here end and their personal keys here are revoked."""
    p = require_mutator(principal)
    member, user = await _target(uow, p, member_id)
    _may_act_on(p, member)
    await _keep_an_owner(uow, member)
    sessions, keys = await _end_access(uow, member)
    await uow.session.delete(member)
    await record_event(
        uow.session,
        organization_id=member.organization_id,
        type="member.removed",
        message=f"{p.label} removed {user.email} ({member.role})",
        actor=actor_of(p),
        payload={
            "memberId": str(member.id),
            "email": user.email,
            "role": member.role,
            "sessionsEnded": sessions,
            "apiKeysRevoked": keys,
        },
    )
    return MemberChange(member, user, sessions, keys)


async def change_member_role(
    uow: UnitOfWork, principal: Principal | None, member_id: UUID, role: Role
) -> MemberChange:
    """Give a member another role; only owners grant the owner role or change an owner."""
    p = require_mutator(principal)
    member, user = await _target(uow, p, member_id)
    _may_act_on(p, member)
    if role is Role.OWNER and p.role is not Role.OWNER:
        raise forbidden("only owners can make owners")
    if member.role == role.value:
        return MemberChange(member, user)
    if role is not Role.OWNER:
        await _keep_an_owner(uow, member)
    before = member.role
    member.role = role.value
    await record_event(
        uow.session,
        organization_id=member.organization_id,
        type="member.role_changed",
        message=f"{p.label} changed {user.email} from {before} to {role.value}",
        actor=actor_of(p),
        payload={"memberId": str(member.id), "email": user.email, "from": before, "to": role.value},
    )
    return MemberChange(member, user)


async def revoke_sessions(
    uow: UnitOfWork, principal: Principal | None, member_id: UUID
) -> MemberChange:
    """End a member's sessions in this organization and revoke their personal keys here."""
    p = require_mutator(principal)
    member, user = await _target(uow, p, member_id)
    _may_act_on(p, member)
    sessions, keys = await _end_access(uow, member)
    await record_event(
        uow.session,
        organization_id=member.organization_id,
        type="member.sessions_revoked",
        message=f"{p.label} ended the sessions and personal keys of {user.email}",
        actor=actor_of(p),
        payload={
            "memberId": str(member.id),
            "email": user.email,
            "sessionsEnded": sessions,
            "apiKeysRevoked": keys,
        },
    )
    return MemberChange(member, user, sessions, keys)
