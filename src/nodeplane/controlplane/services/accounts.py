"""Accounts: the first admin, sign-in with throttling, sessions, organizations and invites."""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth import signin_throttle
from nodeplane.controlplane.auth.emails import email_lookup_key, normalize_email
from nodeplane.controlplane.auth.passwords import password_workers
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
)
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden
from nodeplane.controlplane.services.actors import SYSTEM, actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.store.database import Database, UnitOfWork
from nodeplane.controlplane.store.models import (
    Invite,
    Member,
    Organization,
    Session,
    User,
)
from nodeplane.controlplane.store.types import utcnow

INVITE_TTL = timedelta(days=7)


def _check_password(password: str | None) -> str:
    if password is None:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "a password is required to create the account",
            field="password",
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"password must be at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
        )
    if len(password) > 1024:
        raise DomainError(ErrorCode.INVALID_INPUT, "password is too long", field="password")
    return password


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


def _wrong_credentials() -> DomainError:
    # One message for an unknown email, a wrong password and a malformed address alike.
    return DomainError(ErrorCode.UNAUTHENTICATED, "wrong email or password")


async def _open_session(
    session: AsyncSession, settings: Settings, user: User, organization_id: UUID | None
) -> str:
    token = new_token("nps")
    session.add(
        Session(
            user_id=user.id,
            organization_id=organization_id,
            token_hash=token_digest(token),
            expires_at=utcnow() + timedelta(hours=settings.session_ttl_hours),
        )
    )
    return token


async def login(
    db: Database,
    settings: Settings,
    email: str,
    password: str,
    organization_id: UUID | None = None,
    *,
    client_address: str | None = None,
) -> LoginResult:
    """Check credentials and open a session.

    The password is checked on the worker pool, after the sign-in throttle admitted the attempt
    from `client_address` (the ASGI client host); see `auth.signin_throttle`.
    """
    key = email_lookup_key(email)
    if key is None:
        raise _wrong_credentials()
    limits = settings.accounts
    address = signin_throttle.client_address(client_address)
    workers = password_workers(limits)
    async with workers.admitted(address):
        async with db.write() as uow:
            attempt = await signin_throttle.admit(uow.session, limits, key, address, utcnow())
            user = await uow.session.scalar(select(User).where(User.email == key))
        ok = await workers.verify(user.password_hash if user else None, password)
    if not ok or user is None:
        async with db.write() as uow:
            await signin_throttle.record_failure(uow.session, limits, attempt, utcnow())
        raise _wrong_credentials()

    async with db.write() as uow:
        await signin_throttle.record_success(uow.session, limits, attempt, user.id, utcnow())
        member_of = list(
            (
                await uow.session.scalars(
                    select(Member.organization_id)
                    .where(Member.user_id == user.id)
                    .order_by(Member.created_at)
                )
            ).all()
        )
        org_id: UUID | None = member_of[0] if member_of else None
        allowed = organization_id is None or organization_id in member_of
        if allowed:
            org_id = organization_id or org_id
            token = await _open_session(uow.session, settings, user, org_id)
    if not allowed:
        raise forbidden("you are not a member of that organization")
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


def _sign_in_to_accept() -> DomainError:
    # The same answer whatever password came with the call: it is never checked here, so an
    # invite cannot be used to guess the password of an account that already exists.
    return DomainError(
        ErrorCode.UNAUTHENTICATED,
        "to accept this invite, sign in with the invited email address and accept it from there",
        field="token",
    )


async def _usable_invite(session: AsyncSession, token: str, *, lock: bool) -> Invite:
    query = select(Invite).where(Invite.token_hash == token_digest(token))
    invite = await session.scalar(query.with_for_update() if lock else query)
    if invite is None or invite.accepted_at is not None or invite.expires_at < utcnow():
        raise DomainError(ErrorCode.NOT_FOUND, "invite not found or already used", field="token")
    return invite


async def _join(
    session: AsyncSession, settings: Settings, invite: Invite, user: User, actor: Principal | None
) -> LoginResult:
    """Membership, invite used, event and a session for the invite's organization."""
    already = await session.scalar(
        select(Member.id).where(
            Member.organization_id == invite.organization_id, Member.user_id == user.id
        )
    )
    if already is None:
        session.add(
            Member(organization_id=invite.organization_id, user_id=user.id, role=invite.role)
        )
        await record_event(
            session,
            organization_id=invite.organization_id,
            type="member.joined",
            message=f"{invite.email} joined as {invite.role}",
            actor=actor_of(actor) if actor is not None else SYSTEM,
            payload={"email": invite.email, "role": invite.role},
        )
    invite.accepted_at = utcnow()
    token = await _open_session(session, settings, user, invite.organization_id)
    return LoginResult(token, user, invite.organization_id)


async def accept_invite(
    db: Database,
    settings: Settings,
    principal: Principal | None,
    token: str,
    password: str | None,
    *,
    client_address: str | None = None,
) -> LoginResult:
    """Use an invite and get a session for its organization.

    Signed in as the invited account (session or personal key), the account joins; no password
    is needed. Signed out, the call only ever creates a new account: when the invited email
    already has one, it answers "sign in and accept from there" without looking at the password.
    Every check happens inside the transaction that writes, so a refusal leaves nothing behind.
    """
    if principal is not None:
        if principal.is_executor or principal.user_id is None:
            raise forbidden("an executor key cannot accept invites: sign in as the invited person")
        async with db.write() as uow:
            invite = await _usable_invite(uow.session, token, lock=True)
            user = await uow.session.get(User, principal.user_id)
            if user is None or user.email != invite.email:
                # Says nothing about whether the invited address has an account.
                raise forbidden(
                    "this invite is for another email address: sign in with that address to "
                    "accept it"
                )
            return await _join(uow.session, settings, invite, user, principal)

    async with db.read() as session:
        invite = await _usable_invite(session, token, lock=False)
        if await session.scalar(select(User.id).where(User.email == invite.email)) is not None:
            raise _sign_in_to_accept()
    chosen = _check_password(password)
    limits = settings.accounts
    address = signin_throttle.client_address(client_address)
    workers = password_workers(limits)
    async with workers.admitted(address):
        password_hash = await workers.hash(chosen)
    try:
        async with db.write() as uow:
            # Checked again under the lock: the invite may have been used, or the account
            # made, while the password was being hashed.
            invite = await _usable_invite(uow.session, token, lock=True)
            if await uow.session.scalar(select(User.id).where(User.email == invite.email)):
                raise _sign_in_to_accept()
            user = User(email=invite.email, password_hash=password_hash)
            uow.session.add(user)
            await uow.session.flush()
            await signin_throttle.remember_address(uow.session, user.id, address, utcnow())
            return await _join(uow.session, settings, invite, user, None)
    except IntegrityError:
        # Another invite for the same address made the account at the same moment.
        raise _sign_in_to_accept() from None


async def create_organization(
    uow: UnitOfWork, principal: Principal | None, name: str, owner_email: str
) -> tuple[Organization, InviteResult]:
    """System admins create organizations; the owner always joins through an invite.

    Even when the owner's email already has an account, the owner is not added directly: that
    account may have been made by someone else (an invite accepted with a password of their
    choosing), so only the holder of this invite, signed in as that email, becomes owner.
    """
    p = require_principal(principal)
    if not p.is_system_admin:
        raise forbidden("only a system admin can create organizations")
    name = _check_org_name(name)
    owner_email = normalize_email(owner_email, field="ownerEmail")
    session = uow.session
    if await session.scalar(select(Organization.id).where(Organization.name == name)):
        raise DomainError(ErrorCode.ALREADY_EXISTS, f"organization {name!r} exists", field="name")
    org = Organization(name=name)
    session.add(org)
    await session.flush()
    invite = await _new_invite(uow, org.id, owner_email, Role.OWNER, p.user_id)
    await record_event(
        session,
        organization_id=org.id,
        type="organization.created",
        message=f"{p.label} created organization {name} and invited {owner_email} as owner",
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
    return [(m, u) for m, u in rows]


async def get_organization(
    session: AsyncSession, principal: Principal | None
) -> Organization | None:
    """The caller's organization."""
    p = require_principal(principal)
    if p.organization_id is None:
        return None
    return await session.get(Organization, p.organization_id)
