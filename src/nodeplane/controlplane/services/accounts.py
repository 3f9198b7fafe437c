"""Accounts: the first admin, sign-in with throttling, sessions, organizations and invites."""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth.principal import (
    Principal,
    Role,
    require_member,
    require_mutator,
    require_principal,
)
from nodeplane.controlplane.auth.secrets import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden
from nodeplane.controlplane.services.actors import SYSTEM, actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.store.database import Database, UnitOfWork
from nodeplane.controlplane.store.models import (
    Invite,
    LoginThrottle,
    Member,
    Organization,
    Session,
    User,
)
from nodeplane.controlplane.store.types import utcnow

INVITE_TTL = timedelta(days=7)
MAX_EMAIL_LENGTH = 320


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively."""
    email = email.strip().lower()
    if (
        not email
        or "@" not in email
        or len(email) > MAX_EMAIL_LENGTH
        or any(c.isspace() for c in email)
    ):
        raise DomainError(ErrorCode.INVALID_INPUT, "not a valid email address", field="email")
    return email


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"password must be at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
        )
    if len(password) > 1024:
        raise DomainError(ErrorCode.INVALID_INPUT, "password is too long", field="password")


def _check_org_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "organization name must be 1-200 printable characters",
            field="name",
        )
    return name


DEFAULT_ADMIN_EMAIL = "admin@localhost"


@dataclass(frozen=True)
class BootstrappedAdmin:
    """The first admin; `generated_password` is set (and shown once) when none was given."""

    email: str
    generated_password: str | None


async def bootstrap_admin(db: Database, settings: Settings) -> BootstrappedAdmin | None:
    """On an empty database, create the first (system) admin and their organization.

    Replicas starting together on an empty database race here: the losers' inserts collide with
    the winner's unique rows, and they find the admin already made.
    """
    try:
        async with db.write() as uow:
            if await uow.session.scalar(select(func.count()).select_from(User)):
                return None
            email = normalize_email(settings.admin_email or DEFAULT_ADMIN_EMAIL)
            generated = None if settings.admin_password else secrets.token_urlsafe(12)
            password = settings.admin_password or generated
            assert password is not None
            _check_password(password)
            org = Organization(name="default")
            user = User(email=email, password_hash=hash_password(password), is_system_admin=True)
            uow.session.add_all([org, user])
            await uow.session.flush()
            uow.session.add(Member(organization_id=org.id, user_id=user.id, role=Role.OWNER.value))
            await record_event(
                uow.session,
                organization_id=org.id,
                type="organization.created",
                message=f"first admin {email} created",
                actor=SYSTEM,
            )
    except IntegrityError:
        async with db.read() as session:
            if await session.scalar(select(func.count()).select_from(User)):
                return None  # another replica made the first admin at the same moment
        raise
    return BootstrappedAdmin(email, generated)


# ---- sign-in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    """A new session token (shown once) and who it signs in."""

    token: str
    user: User
    organization_id: UUID | None


async def _throttle(session: AsyncSession, email: str, settings: Settings) -> LoginThrottle:
    now = utcnow()
    row = await session.get(LoginThrottle, email, with_for_update=True)
    if row is None:
        row = LoginThrottle(email=email, failures=0, window_started_at=now)
        session.add(row)
        await session.flush()
    if row.locked_until is not None and row.locked_until > now:
        retry = int((row.locked_until - now).total_seconds()) + 1
        raise DomainError(
            ErrorCode.RATE_LIMITED,
            f"too many failed sign-ins; try again in {retry} s",
            details={"retryAfterSeconds": retry},
        )
    if now - row.window_started_at > timedelta(seconds=settings.login_window_seconds):
        row.failures = 0
        row.window_started_at = now
        row.locked_until = None
    return row


async def login(
    db: Database, settings: Settings, email: str, password: str, organization_id: UUID | None = None
) -> LoginResult:
    """Check credentials (rate-limited per account) and open a session."""
    try:
        email = normalize_email(email)
    except DomainError:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "wrong email or password") from None
    async with db.write() as uow:
        session = uow.session
        throttle = await _throttle(session, email, settings)
        user = await session.scalar(select(User).where(User.email == email))
        ok = verify_password(user.password_hash if user else None, password)
        if not ok or user is None:
            throttle.failures += 1
            if throttle.failures >= settings.login_max_failures:
                throttle.locked_until = utcnow() + timedelta(seconds=settings.login_window_seconds)
            failed = True
        else:
            failed = False
            throttle.failures = 0
            throttle.locked_until = None
    if failed or user is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "wrong email or password")

    async with db.write() as uow:
        memberships = list(
            (
                await uow.session.scalars(
                    select(Member).where(Member.user_id == user.id).order_by(Member.created_at)
                )
            ).all()
        )
        org_id: UUID | None = memberships[0].organization_id if memberships else None
        if organization_id is not None:
            if organization_id not in {m.organization_id for m in memberships}:
                raise forbidden("you are not a member of that organization")
            org_id = organization_id
        token = new_token("nps")
        uow.session.add(
            Session(
                user_id=user.id,
                organization_id=org_id,
                token_hash=token_digest(token),
                expires_at=utcnow() + timedelta(hours=settings.session_ttl_hours),
            )
        )
    return LoginResult(token, user, org_id)


async def logout(uow: UnitOfWork, principal: Principal | None) -> bool:
    """End the caller's session (API keys are revoked instead)."""
    p = require_principal(principal)
    if p.session_id is None:
        return False
    await uow.session.execute(delete(Session).where(Session.id == p.session_id))
    return True


# ---- organizations, members and invites ----------------------------------------------------


@dataclass(frozen=True)
class InviteResult:
    """A one-time invite token (shown once) for an email and role."""

    token: str
    invite: Invite


async def _new_invite(
    uow: UnitOfWork, organization_id: UUID, email: str, role: Role, created_by: UUID | None
) -> InviteResult:
    token = new_token("npi")
    invite = Invite(
        organization_id=organization_id,
        email=email,
        role=role.value,
        token_hash=token_digest(token),
        created_by_id=created_by,
        expires_at=utcnow() + INVITE_TTL,
    )
    uow.session.add(invite)
    await uow.session.flush()
    return InviteResult(token, invite)


async def invite_member(
    uow: UnitOfWork, principal: Principal | None, email: str, role: Role
) -> InviteResult:
    """Invite someone into the caller's organization; only owners may invite owners."""
    p = require_mutator(principal)
    assert p.organization_id is not None
    email = normalize_email(email)
    if role is Role.OWNER and p.role is not Role.OWNER:
        raise forbidden("only owners can invite owners")
    existing = await uow.session.scalar(
        select(Member.id)
        .join(User, User.id == Member.user_id)
        .where(Member.organization_id == p.organization_id, User.email == email)
    )
    if existing is not None:
        raise DomainError(ErrorCode.ALREADY_EXISTS, f"{email} is already a member", field="email")
    result = await _new_invite(uow, p.organization_id, email, role, p.user_id)
    await record_event(
        uow.session,
        organization_id=p.organization_id,
        type="member.invited",
        message=f"{p.label} invited {email} as {role.value}",
        actor=actor_of(p),
        payload={"email": email, "role": role.value},
    )
    return result


async def accept_invite(db: Database, settings: Settings, token: str, password: str) -> LoginResult:
    """Use an invite: create the account (or join with an existing one) and sign in."""
    async with db.write() as uow:
        session = uow.session
        invite = await session.scalar(
            select(Invite).where(Invite.token_hash == token_digest(token)).with_for_update()
        )
        if invite is None or invite.accepted_at is not None or invite.expires_at < utcnow():
            raise DomainError(
                ErrorCode.NOT_FOUND, "invite not found or already used", field="token"
            )
        user = await session.scalar(select(User).where(User.email == invite.email))
        if user is None:
            _check_password(password)
            user = User(email=invite.email, password_hash=hash_password(password))
            session.add(user)
            await session.flush()
        elif not verify_password(user.password_hash, password):
            raise DomainError(
                ErrorCode.UNAUTHENTICATED,
                "an account with this email exists: give its password to join",
                field="password",
            )
        member_exists = await session.scalar(
            select(Member.id).where(
                Member.organization_id == invite.organization_id, Member.user_id == user.id
            )
        )
        if member_exists is None:
            session.add(
                Member(organization_id=invite.organization_id, user_id=user.id, role=invite.role)
            )
        invite.accepted_at = utcnow()
        await record_event(
            session,
            organization_id=invite.organization_id,
            type="member.joined",
            message=f"{invite.email} joined as {invite.role}",
            actor=SYSTEM,
            payload={"email": invite.email, "role": invite.role},
        )
        org_id = invite.organization_id
    return await login(db, settings, user.email, password, org_id)


async def create_organization(
    uow: UnitOfWork, principal: Principal | None, name: str, owner_email: str
) -> tuple[Organization, InviteResult | None]:
    """System admins create organizations; the owner joins directly or through an invite."""
    p = require_principal(principal)
    if not p.is_system_admin:
        raise forbidden("only a system admin can create organizations")
    name = _check_org_name(name)
    owner_email = normalize_email(owner_email)
    session = uow.session
    if await session.scalar(select(Organization.id).where(Organization.name == name)):
        raise DomainError(ErrorCode.ALREADY_EXISTS, f"organization {name!r} exists", field="name")
    org = Organization(name=name)
    session.add(org)
    await session.flush()
    owner = await session.scalar(select(User).where(User.email == owner_email))
    invite: InviteResult | None = None
    if owner is not None:
        session.add(Member(organization_id=org.id, user_id=owner.id, role=Role.OWNER.value))
    else:
        invite = await _new_invite(uow, org.id, owner_email, Role.OWNER, p.user_id)
    await record_event(
        session,
        organization_id=org.id,
        type="organization.created",
        message=f"{p.label} created organization {name} owned by {owner_email}",
        actor=actor_of(p),
        payload={"ownerEmail": owner_email},
    )
    return org, invite


async def list_members(
    session: AsyncSession, principal: Principal | None
) -> list[tuple[Member, User]]:
    """Members of the caller's organization with their accounts."""
    p = require_member(principal)
    rows = await session.execute(
        select(Member, User)
        .join(User, User.id == Member.user_id)
        .where(Member.organization_id == p.organization_id)
        .order_by(User.email)
    )
    return [(m, u) for m, u in rows.tuples()]


async def get_organization(
    session: AsyncSession, principal: Principal | None
) -> Organization | None:
    """The caller's organization."""
    p = require_principal(principal)
    if p.organization_id is None:
        return None
    return await session.get(Organization, p.organization_id)
