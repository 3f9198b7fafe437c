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
_KEYS = cast(Table, ApiKey.__table__)
_EXECUTORS = cast(Table, Executor.__table__)
# A key by its digest, with the name of the executor it is bound to, and a user key's owner
# with their role in the key's organization (none: not a member; a user's key made without an
# organization has no member row either).
_KEY = (
    select(
        _KEYS.c.id,
        _KEYS.c.name,
        _KEYS.c.kind,
        _KEYS.c.organization_id,
        _KEYS.c.executor_id,
        _KEYS.c.enabled,
        _KEYS.c.expires_at,
        _KEYS.c.last_used_at,
        _EXECUTORS.c.name.label("executor_name"),
        _USERS.c.id.label("owner_id"),
        _USERS.c.email.label("owner_email"),
        _USERS.c.is_system_admin.label("owner_is_system_admin"),
        _MEMBERS.c.role.label("owner_role"),
    )
    .select_from(_KEYS)
    .outerjoin(_EXECUTORS, _EXECUTORS.c.id == _KEYS.c.executor_id)
    .outerjoin(_USERS, _USERS.c.id == _KEYS.c.created_by_id)
    .outerjoin(
        _MEMBERS,
        and_(
            _MEMBERS.c.organization_id == _KEYS.c.organization_id,
            _MEMBERS.c.user_id == _KEYS.c.created_by_id,
        ),
    )
    .where(_KEYS.c.token_hash == bindparam("digest"))
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
        # The key, the name of the executor it is bound to, and a user key's owner with their
        # role in its organization, in one round trip: executors authenticate every few seconds
        # each, so plain columns rather than ORM objects.
        found = (await session.execute(_KEY, {"digest": digest})).first()
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
            if key.owner_id is None or not key.owner_role:
                return None
            principal = Principal(
                kind="user",
                organization_id=key.organization_id,
                label=key.owner_email,
                user_id=key.owner_id,
                role=Role(key.owner_role),
                is_system_admin=key.owner_is_system_admin,
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
