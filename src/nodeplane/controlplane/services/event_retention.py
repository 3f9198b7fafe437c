"""Pruning the events feed: the fleet's own chatter ages out, the audit trail stays.

Prunable are the events nobody typed: what executors report (crashes, sync errors), phase
transitions derived from their observations, executors connecting and going offline, alert
notifications. Kept forever are the events a person caused (every event whose actor is a user:
nodes created, changed, started and stopped, members and keys) and the security records of
refused executors. A prunable event goes when it is older than the retention age or when its
organization has more prunable events than the retention count (the oldest first).

Each delete is a short transaction of at most `batch` rows, so on SQLite other writers get the
database between them; on PostgreSQL an advisory lock lets one replica prune while the others
skip that round (running twice at once would only repeat the same deletes).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    and_,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.config import EventRetention
from nodeplane.controlplane.metrics.instruments import events_pruned
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.models import Event
from nodeplane.controlplane.store.types import utcnow

# Refusals of executor keys and instances are security records: kept with the audit trail.
KEPT_TYPES = ("executor.bind_refused", "executor.instance_refused")

# Any constant works; the same on every replica, unlike any other lock's.
_PRUNE_LOCK_KEY = 7_272_740_303


@dataclass(frozen=True)
class EventPrune:
    """What one round deleted."""

    by_age: int
    by_count: int


def prunable() -> ColumnElement[bool]:
    """Events not caused by a person and not a security record. The literal (not a bound
    parameter) lets PostgreSQL and SQLite match the partial index ix_events_prunable."""
    return and_(
        Event.actor_type.op("<>")(literal_column("'user'")),
        Event.type.not_in(KEPT_TYPES),
    )


async def prune_events(db: Database, retention: EventRetention) -> EventPrune | None:
    """One round: the old first (one query for every organization), then each organization
    over the count; None if another replica is pruning right now."""
    by_age = by_count = 0
    if retention.max_age_days > 0:
        cutoff = utcnow() - timedelta(days=retention.max_age_days)
        deleted = await _prune(db, retention.batch, and_(prunable(), Event.created_at < cutoff))
        if deleted is None:
            return None
        by_age = deleted
    if retention.max_per_organization > 0:
        for organization_id in await _over_count(db, retention.max_per_organization):
            boundary = await _oldest_kept(db, organization_id, retention.max_per_organization)
            if boundary is None:
                continue
            deleted = await _prune(db, retention.batch, _older_than(organization_id, *boundary))
            if deleted is None:
                return None
            by_count += deleted
    if by_age:
        events_pruned.labels("age").inc(by_age)
    if by_count:
        events_pruned.labels("count").inc(by_count)
    return EventPrune(by_age, by_count)


def _older_than(organization_id: UUID, at: datetime, event_id: int) -> ColumnElement[bool]:
    """The organization's prunable events older than the one at (`at`, `event_id`)."""
    return and_(
        Event.organization_id == organization_id,
        prunable(),
        or_(Event.created_at < at, and_(Event.created_at == at, Event.id < event_id)),
    )


async def _over_count(db: Database, keep: int) -> list[UUID]:
    """Organizations with more than `keep` prunable events (one pass over the index)."""
    async with db.read() as session:
        return list(
            await session.scalars(
                select(Event.organization_id)
                .where(prunable())
                .group_by(Event.organization_id)
                .having(func.count() > keep)
            )
        )


async def _oldest_kept(
    db: Database, organization_id: UUID, keep: int
) -> tuple[datetime, int] | None:
    """The oldest of the newest `keep` prunable events of the organization."""
    async with db.read() as session:
        row = (
            await session.execute(
                select(Event.created_at, Event.id)
                .where(Event.organization_id == organization_id, prunable())
                .order_by(Event.created_at.desc(), Event.id.desc())
                .offset(keep - 1)
                .limit(1)
            )
        ).first()
    return (row[0], row[1]) if row is not None else None


async def _prune(db: Database, batch: int, condition: ColumnElement[bool]) -> int | None:
    """Delete what matches, `batch` rows per transaction, oldest first; None if locked out.
    Rows are found in a read first, so a round with nothing to delete never takes SQLite's
    write lock."""
    total = 0
    while True:
        async with db.read() as session:
            ids = list(
                await session.scalars(
                    select(Event.id)
                    .where(condition)
                    .order_by(Event.created_at, Event.id)
                    .limit(batch)
                )
            )
        if not ids:
            return total
        async with db.write() as uow:
            if not await _got_lock(db, uow.session):
                return None
            # The condition again: a row is only ever deleted for what it is now.
            result = await uow.session.execute(delete(Event).where(Event.id.in_(ids), condition))
            total += cast(CursorResult[Any], result).rowcount
        if len(ids) < batch:
            return total


async def _got_lock(db: Database, session: AsyncSession) -> bool:
    if not db.is_postgresql:
        return True
    got = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PRUNE_LOCK_KEY})
    return bool(got)
