"""API keys: created with the secret shown once, stored hashed, revocable, optionally expiring."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth.principal import (
    ApiKeyKind,
    Principal,
    require_member,
    require_mutator,
)
from nodeplane.controlplane.auth.secrets import (
    EXECUTOR_KEY_PREFIX,
    PERSONAL_KEY_PREFIX,
    new_token,
    token_digest,
)
from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden, not_found
from nodeplane.controlplane.services.actors import actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.store.database import UnitOfWork
from nodeplane.controlplane.store.models import ApiKey, Executor
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import datetime_problem, unstorable_text_problem

KEY_PREFIX = {ApiKeyKind.EXECUTOR: EXECUTOR_KEY_PREFIX, ApiKeyKind.PERSONAL: PERSONAL_KEY_PREFIX}


@dataclass(frozen=True)
class CreatedApiKey:
    """The new key row and its secret, which is never shown again."""

    key: ApiKey
    secret: str


async def create_api_key(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    name: str,
    kind: ApiKeyKind,
    expires_at: datetime | None = None,
    executor_id: UUID | None = None,
) -> CreatedApiKey:
    """Create a key; executor keys need an owner or admin, personal keys any member.

    An executor key created with `executor_id` is bound to that (existing) executor at once: the
    way to give a host a new key for an executor that already has one.
    """
    p = require_mutator(principal) if kind is ApiKeyKind.EXECUTOR else require_member(principal)
    name = name.strip()
    if (
        not name
        or len(name) > 100
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or unstorable_text_problem(name)
    ):
        raise DomainError(
            ErrorCode.INVALID_INPUT, "key name must be 1-100 printable characters", field="name"
        )
    if expires_at is not None:
        if problem := datetime_problem(expires_at):
            raise DomainError(ErrorCode.INVALID_INPUT, f"expiresAt {problem}", field="expiresAt")
        if expires_at <= utcnow():
            raise DomainError(
                ErrorCode.INVALID_INPUT, "expiresAt is in the past", field="expiresAt"
            )
    assert p.organization_id is not None
    executor: Executor | None = None
    if executor_id is not None:
        if kind is not ApiKeyKind.EXECUTOR:
            raise DomainError(
                ErrorCode.INVALID_INPUT,
                "only an executor key can be bound to an executor",
                field="executorId",
            )
        executor = await uow.session.scalar(
            select(Executor).where(
                Executor.id == executor_id, Executor.organization_id == p.organization_id
            )
        )
        if executor is None:
            raise DomainError(ErrorCode.NOT_FOUND, "executor not found", field="executorId")
    secret = new_token(KEY_PREFIX[kind])
    key = ApiKey(
        organization_id=p.organization_id,
        name=name,
        kind=kind.value,
        prefix=secret[:10],
        token_hash=token_digest(secret),
        created_by_id=p.user_id,
        expires_at=expires_at,
        executor_id=executor.id if executor else None,
    )
    uow.session.add(key)
    await uow.session.flush()
    payload: dict[str, Any] = {"keyId": str(key.id), "kind": kind.value}
    if executor is not None:
        payload["executorId"] = str(executor.id)
    await record_event(
        uow.session,
        organization_id=p.organization_id,
        type="apikey.created",
        message=f"{p.label} created {kind.value} key {name!r}"
        + (f" bound to executor {executor.name}" if executor else ""),
        actor=actor_of(p),
        executor_id=executor.id if executor else None,
        payload=payload,
    )
    return CreatedApiKey(key, secret)


async def revoke_api_key(uow: UnitOfWork, principal: Principal | None, key_id: UUID) -> ApiKey:
    """Disable a key at once; owners/admins revoke any key, members only their own."""
    p = require_member(principal)
    key = await uow.session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == p.organization_id)
    )
    if key is None:
        raise not_found("API key")
    if not p.can_mutate and key.created_by_id != p.user_id:
        raise forbidden("members can revoke only their own keys")
    if key.enabled:
        key.enabled = False
        key.revoked_at = utcnow()
        # Cached authentications of it are dropped when this commits (store/key_cache.py).
        uow.keys_changed([key.id])
        await record_event(
            uow.session,
            organization_id=key.organization_id,
            type="apikey.revoked",
            message=f"{p.label} revoked {key.kind} key {key.name!r}",
            actor=actor_of(p),
            payload={"keyId": str(key.id)},
        )
    return key


async def list_api_keys(session: AsyncSession, principal: Principal | None) -> list[ApiKey]:
    """Keys of the caller's organization (members see only their own)."""
    p = require_member(principal)
    query = select(ApiKey).where(ApiKey.organization_id == p.organization_id)
    if not p.can_mutate:
        query = query.where(ApiKey.created_by_id == p.user_id)
    return list((await session.scalars(query.order_by(ApiKey.created_at.desc()))).all())
