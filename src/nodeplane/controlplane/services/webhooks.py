"""Webhook endpoints and the delivery outbox (docs/webhooks.md).

Endpoints belong to an organization; owners and admins create, change, delete, test them and
rotate their secrets, members read them (never the secret, which only create and rotate
return, once). `enqueue_webhook_deliveries` writes one outbox row per matching endpoint in the
caller's transaction, so a delivery exists exactly when the event that caused it was committed;
the dispatcher (webhooks/dispatcher.py) sends them.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth.principal import Principal, require_member, require_mutator
from nodeplane.controlplane.errors import DomainError, ErrorCode, not_found
from nodeplane.controlplane.services.actors import actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.store.database import UnitOfWork
from nodeplane.controlplane.store.models import (
    Event,
    Organization,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from nodeplane.controlplane.store.types import utcnow
from nodeplane.controlplane.webhooks.signing import new_secret
from nodeplane.controlplane.webhooks.urls import check_webhook_url
from nodeplane.protocol import unstorable_text_problem

# The events an endpoint can subscribe to: incident transitions of the alerts (issue 10).
ALERT_OPENED = "notification.alert.opened"
ALERT_RESOLVED = "notification.alert.resolved"
WEBHOOK_EVENT_TYPES = (ALERT_OPENED, ALERT_RESOLVED)
# Sent to one endpoint on request (the Test button), whatever it subscribes to.
TEST_EVENT_TYPE = "webhook.test"

MAX_ENDPOINTS_PER_ORGANIZATION = 20
MAX_DESCRIPTION_CHARS = 200
MAX_PAGE = 100
# Deliveries deleted per pruning transaction (the rest go in the next rounds).
PRUNE_BATCH = 1000


class DeliveryStatus:
    """The states of a delivery."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ALL = (PENDING, SUCCEEDED, FAILED)


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint and its signing secret, returned when it is created or rotated only."""

    endpoint: WebhookEndpoint
    secret: str


def _description(value: str) -> str:
    value = value.strip()
    if (
        len(value) > MAX_DESCRIPTION_CHARS
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
        or unstorable_text_problem(value)
    ):
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"description must be at most {MAX_DESCRIPTION_CHARS} printable characters",
            field="description",
        )
    return value


def _event_types(values: list[str]) -> list[str]:
    chosen = list(dict.fromkeys(values))
    unknown = [v for v in chosen if v not in WEBHOOK_EVENT_TYPES]
    if unknown or not chosen:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "eventTypes must name one or more of " + ", ".join(WEBHOOK_EVENT_TYPES),
            field="eventTypes",
        )
    return chosen


async def _own_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: UUID
) -> WebhookEndpoint:
    endpoint = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.organization_id == principal.organization_id,
        )
    )
    if endpoint is None:
        raise not_found("webhook endpoint")
    return endpoint


async def create_endpoint(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    url: str,
    description: str = "",
    event_types: list[str] | None = None,
    enabled: bool = True,
) -> EndpointWithSecret:
    """Add an endpoint (owners and admins); its secret is returned only this once."""
    p = require_mutator(principal)
    assert p.organization_id is not None
    target = check_webhook_url(url)
    chosen = _event_types(list(WEBHOOK_EVENT_TYPES) if event_types is None else event_types)
    count = len(
        (
            await uow.session.scalars(
                select(WebhookEndpoint.id).where(
                    WebhookEndpoint.organization_id == p.organization_id
                )
            )
        ).all()
    )
    if count >= MAX_ENDPOINTS_PER_ORGANIZATION:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"an organization has at most {MAX_ENDPOINTS_PER_ORGANIZATION} webhook endpoints",
            field="url",
        )
    secret = new_secret()
    endpoint = WebhookEndpoint(
        organization_id=p.organization_id,
        url=target.url,
        description=_description(description),
        enabled=enabled,
        event_types=chosen,
        secret=secret,
        secret_prefix=secret[:12],
        created_by_id=p.user_id,
    )
    uow.session.add(endpoint)
    await uow.session.flush()
    await record_event(
        uow.session,
        organization_id=p.organization_id,
        type="webhook.endpoint.created",
        message=f"{p.label} added webhook endpoint {target.url}",
        actor=actor_of(p),
        payload={"endpointId": str(endpoint.id), "url": target.url},
    )
    return EndpointWithSecret(endpoint, secret)


async def update_endpoint(
    uow: UnitOfWork,
    principal: Principal | None,
    endpoint_id: UUID,
    *,
    url: str | None = None,
    description: str | None = None,
    event_types: list[str] | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change an endpoint (owners and admins). Disabling it ends its pending deliveries as
    failed: nothing more is sent to it until it is enabled again."""
    p = require_mutator(principal)
    endpoint = await _own_endpoint(uow.session, p, endpoint_id)
    changed: list[str] = []
    if url is not None:
        endpoint.url = check_webhook_url(url).url
        changed.append("url")
    if description is not None:
        endpoint.description = _description(description)
        changed.append("description")
    if event_types is not None:
        endpoint.event_types = _event_types(event_types)
        changed.append("eventTypes")
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        changed.append("enabled")
        if not enabled:
            await uow.session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint.id,
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                )
                .values(
                    status=DeliveryStatus.FAILED,
                    next_attempt_at=None,
                    claim_id=None,
                    completed_at=utcnow(),
                    last_error="endpoint disabled",
                )
            )
    if changed:
        endpoint.updated_at = utcnow()
        await record_event(
            uow.session,
            organization_id=endpoint.organization_id,
            type="webhook.endpoint.updated",
            message=f"{p.label} changed {', '.join(changed)} of webhook endpoint {endpoint.url}",
            actor=actor_of(p),
            payload={"endpointId": str(endpoint.id), "changed": changed},
        )
    return endpoint


async def delete_endpoint(uow: UnitOfWork, principal: Principal | None, endpoint_id: UUID) -> bool:
    """Remove an endpoint with its deliveries and their attempts (owners and admins)."""
    p = require_mutator(principal)
    endpoint = await _own_endpoint(uow.session, p, endpoint_id)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    await uow.session.execute(
        delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries))
    )
    await uow.session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    await uow.session.delete(endpoint)
    await record_event(
        uow.session,
        organization_id=endpoint.organization_id,
        type="webhook.endpoint.deleted",
        message=f"{p.label} removed webhook endpoint {endpoint.url}",
        actor=actor_of(p),
        payload={"endpointId": str(endpoint.id), "url": endpoint.url},
    )
    return True


async def rotate_secret(
    uow: UnitOfWork, principal: Principal | None, endpoint_id: UUID
) -> EndpointWithSecret:
    """A new signing secret for an endpoint (owners and admins), returned only this once. The
    old one stops at once: attempts from now on, retries included, are signed with the new."""
    p = require_mutator(principal)
    endpoint = await _own_endpoint(uow.session, p, endpoint_id)
    secret = new_secret()
    endpoint.secret = secret
    endpoint.secret_prefix = secret[:12]
    endpoint.updated_at = utcnow()
    await record_event(
        uow.session,
        organization_id=endpoint.organization_id,
        type="webhook.endpoint.secret_rotated",
        message=f"{p.label} rotated the secret of webhook endpoint {endpoint.url}",
        actor=actor_of(p),
        payload={"endpointId": str(endpoint.id)},
    )
    return EndpointWithSecret(endpoint, secret)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def delivery_body(delivery_id: UUID, event: Event, organization: Organization) -> str:
    """The JSON document POSTed for `event`: the same bytes on every attempt."""
    document: dict[str, Any] = {
        "id": str(delivery_id),
        "type": event.type,
        "createdAt": _iso(event.created_at),
        "organization": {"id": str(organization.id), "name": organization.name},
        "event": {
            "id": event.id,
            "type": event.type,
            "level": event.level,
            "message": event.message,
            "actor": event.actor,
            "nodeId": str(event.node_id) if event.node_id else None,
            "nodeName": event.node_name,
            "executorId": str(event.executor_id) if event.executor_id else None,
            "payload": event.payload,
            "createdAt": _iso(event.created_at),
        },
    }
    # ASCII (non-ASCII as \u escapes): the bytes signed and sent never depend on an encoding.
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


async def enqueue_webhook_deliveries(
    session: AsyncSession,
    *,
    organization_id: UUID,
    event: Event,
    endpoint_id: UUID | None = None,
) -> list[WebhookDelivery]:
    """Queue `event` for every enabled endpoint of the organization that subscribes to its type,
    in the caller's transaction (call it right after `record_event`, before the commit).

    With `endpoint_id`, for that one endpoint only, whatever its subscriptions and state (the
    Test button). The deliveries are sent by the dispatcher once committed; nothing here waits
    for a receiver."""
    if event.id is None or event.created_at is None:
        await session.flush()
    query = select(WebhookEndpoint).where(WebhookEndpoint.organization_id == organization_id)
    if endpoint_id is not None:
        query = query.where(WebhookEndpoint.id == endpoint_id)
    else:
        query = query.where(WebhookEndpoint.enabled.is_(True))
    endpoints = [
        e
        for e in (await session.scalars(query.order_by(WebhookEndpoint.created_at))).all()
        if endpoint_id is not None or event.type in (e.event_types or [])
    ]
    if not endpoints:
        return []
    organization = await session.get(Organization, organization_id)
    if organization is None:
        return []
    now = utcnow()
    deliveries = []
    for endpoint in endpoints:
        delivery_id = uuid.uuid4()
        delivery = WebhookDelivery(
            id=delivery_id,
            organization_id=organization_id,
            endpoint_id=endpoint.id,
            event_id=event.id,
            event_type=event.type,
            status=DeliveryStatus.PENDING,
            series=1,
            series_started_at=now,
            attempt_count=0,
            next_attempt_at=now,
            created_at=now,
            body=delivery_body(delivery_id, event, organization),
        )
        session.add(delivery)
        deliveries.append(delivery)
    await session.flush()
    return deliveries


async def send_test_delivery(
    uow: UnitOfWork, principal: Principal | None, endpoint_id: UUID
) -> WebhookDelivery:
    """Queue a `webhook.test` delivery to one endpoint (owners and admins)."""
    p = require_mutator(principal)
    endpoint = await _own_endpoint(uow.session, p, endpoint_id)
    event = await record_event(
        uow.session,
        organization_id=endpoint.organization_id,
        type=TEST_EVENT_TYPE,
        message=f"{p.label} sent a test delivery to webhook endpoint {endpoint.url}",
        actor=actor_of(p),
        payload={"endpointId": str(endpoint.id), "test": True},
    )
    (delivery,) = await enqueue_webhook_deliveries(
        uow.session,
        organization_id=endpoint.organization_id,
        event=event,
        endpoint_id=endpoint.id,
    )
    return delivery


async def redeliver(
    uow: UnitOfWork, principal: Principal | None, delivery_id: UUID
) -> WebhookDelivery:
    """Start a new series of attempts for a finished delivery (owners and admins): the same
    delivery id and body, attempts counted afresh, retried for another window."""
    p = require_mutator(principal)
    delivery = await uow.session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.organization_id == p.organization_id,
        )
    )
    if delivery is None:
        raise not_found("webhook delivery")
    if delivery.status == DeliveryStatus.PENDING:
        raise DomainError(
            ErrorCode.INVALID_ACTION,
            "this delivery is still being attempted; redeliver it once it has succeeded or failed",
        )
    now = utcnow()
    delivery.series += 1
    delivery.series_started_at = now
    delivery.attempt_count = 0
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now
    delivery.claim_id = None
    delivery.completed_at = None
    await record_event(
        uow.session,
        organization_id=delivery.organization_id,
        type="webhook.redelivered",
        message=f"{p.label} redelivered webhook delivery {delivery.id}",
        actor=actor_of(p),
        payload={"deliveryId": str(delivery.id), "series": delivery.series},
    )
    return delivery


async def list_endpoints(
    session: AsyncSession, principal: Principal | None
) -> list[WebhookEndpoint]:
    """The organization's endpoints, oldest first (any member)."""
    p = require_member(principal)
    rows = await session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.organization_id == p.organization_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(rows.all())


async def get_endpoint(
    session: AsyncSession, principal: Principal | None, endpoint_id: UUID
) -> WebhookEndpoint | None:
    """One endpoint of the organization, or None (any member)."""
    p = require_member(principal)
    endpoint: WebhookEndpoint | None = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.organization_id == p.organization_id,
        )
    )
    return endpoint


@dataclass(frozen=True)
class DeliveryPage:
    """Deliveries newest first with their attempts (oldest first), and the next page's cursor."""

    items: list[WebhookDelivery]
    attempts: dict[UUID, list[WebhookAttempt]]
    end_cursor: str | None
    has_next_page: bool


def _cursor(delivery: WebhookDelivery) -> str:
    return f"{delivery.created_at.isoformat()}|{delivery.id}"


def _parse_cursor(value: str) -> tuple[datetime, UUID] | None:
    when, _, ident = value.partition("|")
    try:
        parsed = datetime.fromisoformat(when), UUID(ident)
    except ValueError:
        return None
    return parsed if parsed[0].tzinfo is not None else None


async def attempts_of(
    session: AsyncSession, delivery_ids: list[UUID]
) -> dict[UUID, list[WebhookAttempt]]:
    """The attempts of these deliveries, oldest first, in one query."""
    found: dict[UUID, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    if delivery_ids:
        rows = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(delivery_ids))
            .order_by(WebhookAttempt.id)
        )
        for attempt in rows.all():
            found[attempt.delivery_id].append(attempt)
    return found


async def list_deliveries(
    session: AsyncSession,
    principal: Principal | None,
    *,
    endpoint_id: UUID | None = None,
    status: str | None = None,
    first: int = 25,
    after: str | None = None,
) -> DeliveryPage:
    """The organization's deliveries, newest first, keyset-paginated (any member)."""
    p = require_member(principal)
    if status is not None and status not in DeliveryStatus.ALL:
        raise DomainError(ErrorCode.INVALID_INPUT, "unknown delivery status", field="status")
    first = max(1, min(first, MAX_PAGE))
    query = select(WebhookDelivery).where(WebhookDelivery.organization_id == p.organization_id)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if after:
        position = _parse_cursor(after)
        if position is None:
            return DeliveryPage([], {}, None, False)
        when, ident = position
        query = query.where(
            or_(
                WebhookDelivery.created_at < when,
                and_(WebhookDelivery.created_at == when, WebhookDelivery.id < ident),
            )
        )
    rows = list(
        (
            await session.scalars(
                query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(
                    first + 1
                )
            )
        ).all()
    )
    has_next = len(rows) > first
    rows = rows[:first]
    attempts = await attempts_of(session, [d.id for d in rows])
    return DeliveryPage(rows, attempts, _cursor(rows[-1]) if rows else None, has_next)


async def get_delivery(
    session: AsyncSession, principal: Principal | None, delivery_id: UUID
) -> tuple[WebhookDelivery, list[WebhookAttempt]] | None:
    """One delivery of the organization with its attempts, or None (any member)."""
    p = require_member(principal)
    delivery = await session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.organization_id == p.organization_id,
        )
    )
    if delivery is None:
        return None
    return delivery, (await attempts_of(session, [delivery.id]))[delivery.id]


async def prune_deliveries(session: AsyncSession, *, older_than_days: float) -> int:
    """Delete deliveries that finished (succeeded or failed) more than `older_than_days` ago,
    with their attempts; pending ones stay whatever their age. Returns how many went."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    finished = select(WebhookDelivery.id).where(
        WebhookDelivery.status != DeliveryStatus.PENDING,
        WebhookDelivery.completed_at < cutoff,
    )
    ids = list((await session.scalars(finished.limit(PRUNE_BATCH))).all())
    if ids:
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)
