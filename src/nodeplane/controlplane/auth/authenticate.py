"""Turn a bearer token (session or API key) into a Principal."""

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, bindparam, select

from nodeplane.controlplane.auth.principal import ApiKeyKind, Principal, Role
from nodeplane.controlplane.auth.secrets import EXECUTOR_KEY_PREFIX, token_digest
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.key_cache import CachedKey
from nodeplane.controlplane.store.models import ApiKey, Executor, Member, Session, User
from nodeplane.controlplane.store.types import utcnow

# lastUsedAt is advisory; writing it at most this often keeps reads from turning into writes.
LAST_USED_RESOLUTION = timedelta(seconds=30)
# Executor keys are the ones authenticated every few seconds: theirs are cached (key_cache.py).
EXECUTOR_TOKEN_PREFIX = f"{EXECUTOR_KEY_PREFIX}_"

# Built once, as plain columns: a user's every request is authenticated by one of these (a
# session's user and role in one round trip rather than two statements of ORM loads).
_USERS = cast(Table, User.__table__)
_MEMBERS = cast(Table, Member.__table__)
_SESSIONS = cast(Table, Session.__table__)
_SESSION_USER_ROLE = (
    select(
        _SESSIONS.c.id.label("session_id"),
        _SESSIONS.c.organization_id,
        _USERS.c.id.label("user_id"),
        _USERS.c.email,
        _USERS.c.is_system_admin,
        _MEMBERS.c.role,
    )
    .select_from(_SESSIONS)
    .join(_USERS, _USERS.c.id == _SESSIONS.c.user_id)
    .outerjoin(
        _MEMBERS,
        and_(
            _MEMBERS.c.organization_id == _SESSIONS.c.organization_id,
            _MEMBERS.c.user_id == _USERS.c.id,
        ),
    )
    .where(
        _SESSIONS.c.token_hash == bindparam("digest"),
        _SESSIONS.c.expires_at > bindparam("now", type_=_SESSIONS.c.expires_at.type),
    )
)
# A user API key's owner and their role in the key's organization (none: not a member).
_USER_ROLE = (
    select(_USERS.c.id.label("user_id"), _USERS.c.email, _USERS.c.is_system_admin, _MEMBERS.c.role)
    .select_from(_USERS)
    .outerjoin(
        _MEMBERS,
        and_(
            _MEMBERS.c.organization_id == bindparam("organization_id"),
            _MEMBERS.c.user_id == _USERS.c.id,
        ),
    )
    .where(_USERS.c.id == bindparam("user_id"))
)


async def authenticate(db: Database, token: str | None) -> Principal | None:
    """The principal for `token`, or None when it is missing, unknown, revoked or expired."""
    if not token or len(token) > 200:
        return None
    digest = token_digest(token)
    now = utcnow()
    if token.startswith(EXECUTOR_TOKEN_PREFIX):
        cached = db.key_cache.get(digest, now)
        if cached is not None:
            _note_use(db, cached, now)
            known: Principal = cached.value
            return known
    # Read before the lookup: an eviction meanwhile keeps what is read out of the cache.
    generation = db.key_cache.generation
    # One statement for a key (and one more for a user's role): no snapshot to share.
    async with db.quick_read() as session:
        if token.startswith("nps_"):
            row = (
                await session.execute(_SESSION_USER_ROLE, {"digest": digest, "now": now})
            ).first()
            if row is None:
                return None
            role = Role(row.role) if row.role else None
            return Principal(
                kind="user",
                organization_id=row.organization_id if role else None,
                label=row.email,
                user_id=row.user_id,
                role=role,
                is_system_admin=row.is_system_admin,
                session_id=row.session_id,
            )
        # The key and the name of the executor it is bound to in one round trip: executors
        # authenticate every few seconds each, so plain columns rather than ORM objects.
        keys = ApiKey.__table__
        found = (
            await session.execute(
                select(
                    keys.c.id,
                    keys.c.name,
                    keys.c.kind,
                    keys.c.organization_id,
                    keys.c.executor_id,
                    keys.c.created_by_id,
                    keys.c.enabled,
                    keys.c.expires_at,
                    keys.c.last_used_at,
                    Executor.__table__.c.name.label("executor_name"),
                )
                .select_from(keys)
                .outerjoin(Executor.__table__, Executor.__table__.c.id == keys.c.executor_id)
                .where(keys.c.token_hash == digest)
            )
        ).first()
        if found is None:
            return None
        key = found
        if not key.enabled or (key.expires_at is not None and key.expires_at <= now):
            return None
        principal: Principal | None
        if key.kind == ApiKeyKind.EXECUTOR.value:
            principal = Principal(
                kind="executor",
                organization_id=key.organization_id,
                label=f"executor:{key.executor_name}" if key.executor_name else f"key:{key.name}",
                api_key_id=key.id,
                executor_id=key.executor_id,
            )
            # A key not yet bound to its executor is bound by its first sync: not kept.
            if key.executor_id is not None and token.startswith(EXECUTOR_TOKEN_PREFIX):
                db.key_cache.put(
                    digest,
                    generation,
                    key.id,
                    principal,
                    key.expires_at,
                    key.last_used_at,
                )
        else:
            owner = (
                (
                    await session.execute(
                        _USER_ROLE,
                        {"user_id": key.created_by_id, "organization_id": key.organization_id},
                    )
                ).first()
                if key.created_by_id and key.organization_id
                else None
            )
            if owner is None or not owner.role:
                return None
            principal = Principal(
                kind="user",
                organization_id=key.organization_id,
                label=owner.email,
                user_id=owner.user_id,
                role=Role(owner.role),
                is_system_admin=owner.is_system_admin,
                api_key_id=key.id,
            )
        stale_use = key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION
    if stale_use:
        db.seen.key_used(key.id, now)  # written behind the request (store/seen_times.py)
    return principal


def _note_use(db: Database, cached: CachedKey[Principal], now: datetime) -> None:
    """Record a cached key's use as a read one's is: at most every LAST_USED_RESOLUTION."""
    if cached.last_used_at is None or now - cached.last_used_at > LAST_USED_RESOLUTION:
        cached.last_used_at = now
        db.seen.key_used(cached.key_id, now)  # written behind the request (store/seen_times.py)
