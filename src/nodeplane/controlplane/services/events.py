"""The append-only events feed: recording and keyset-paginated reading."""

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth.principal import Principal, require_principal
from nodeplane.controlplane.services.actors import Actor
from nodeplane.controlplane.services.filter_text import check_filter_text
from nodeplane.controlplane.services.node_facts import NamedNode
from nodeplane.controlplane.store.models import Event
from nodeplane.protocol import EventLevel, EventSource

MAX_PAGE = 200
# Event ids are 64-bit; a cursor beyond that is not one of ours (and no database takes it).
MAX_EVENT_ID = 2**63 - 1


async def record_event(
    session: AsyncSession,
    *,
    organization_id: UUID,
    type: str,
    message: str,
    actor: Actor,
    level: EventLevel = EventLevel.INFO,
    source: EventSource = EventSource.CONTROL_PLANE,
    node: NamedNode | None = None,
    executor_id: UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> Event:
    """Append one event in the caller's transaction; its time is the server's, always."""
    event = Event(
        organization_id=organization_id,
        type=type,
        level=level.value,
        source=source.value,
        message=message,
        actor_type=actor.type,
        actor_id=actor.id,
        actor=actor.label,
        node_id=node.id if node else None,
        node_name=node.name if node else None,
        executor_id=executor_id
        if executor_id is not None
        else (node.executor_id if node else None),
        payload=payload or {},
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class EventFilter:
    """Which events to list."""

    node_id: UUID | None = None
    executor_id: UUID | None = None
    type: str | None = None
    level: EventLevel | None = None


@dataclass(frozen=True)
class EventPage:
    """One page of events, newest first, and the cursor of the next page."""

    items: list[Event]
    end_cursor: str | None
    has_next_page: bool


async def list_events(
    session: AsyncSession,
    principal: Principal | None,
    flt: EventFilter,
    *,
    first: int = 50,
    after: str | None = None,
) -> EventPage:
    """Events of the caller's organization, newest first, keyset-paginated by event id."""
    p = require_principal(principal)
    check_filter_text(("filter.type", flt.type))
    if p.organization_id is None:
        return EventPage([], None, False)
    first = max(1, min(first, MAX_PAGE))
    query = select(Event).where(Event.organization_id == p.organization_id)
    if p.is_executor:
        # Executor keys see only their own executor's events.
        query = query.where(Event.executor_id == p.executor_id)
    if flt.node_id is not None:
        query = query.where(Event.node_id == flt.node_id)
    if flt.executor_id is not None:
        query = query.where(Event.executor_id == flt.executor_id)
    if flt.type:
        # A trailing '*' matches a type prefix, e.g. "node.lifecycle.*".
        if flt.type.endswith("*"):
            query = query.where(Event.type.startswith(flt.type[:-1], autoescape=True))
        else:
            query = query.where(Event.type == flt.type)
    if flt.level is not None:
        query = query.where(Event.level == flt.level.value)
    if after:
        try:
            before_id = int(after)
        except ValueError:
            return EventPage([], None, False)
        if not 0 <= before_id <= MAX_EVENT_ID:
            return EventPage([], None, False)
        query = query.where(Event.id < before_id)
    rows = list((await session.scalars(query.order_by(Event.id.desc()).limit(first + 1))).all())
    has_next = len(rows) > first
    rows = rows[:first]
    return EventPage(rows, str(rows[-1].id) if rows else None, has_next)
