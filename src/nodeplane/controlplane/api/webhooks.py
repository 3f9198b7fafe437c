"""GraphQL for webhooks: endpoints, deliveries with their attempts, and the mutations that
change them. Reads are any member's, scoped to the caller's organization; changes are owners'
and admins' (services/webhooks.py checks both). The secret is in the payload of create and
rotate only: no field of `WebhookEndpoint` carries it."""

import json
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

import strawberry
from strawberry.scalars import JSON

from nodeplane.controlplane.api.context import Info
from nodeplane.controlplane.api.types import PageInfo
from nodeplane.controlplane.services import webhooks
from nodeplane.controlplane.store import models


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@strawberry.type
class WebhookEndpoint:
    id: UUID
    url: str
    description: str
    enabled: bool
    event_types: list[str]
    secret_prefix: str = strawberry.field(
        description="The secret's first characters, to tell secrets apart; never the secret."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: models.WebhookEndpoint) -> "WebhookEndpoint":
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            enabled=row.enabled,
            event_types=list(row.event_types or []),
            secret_prefix=row.secret_prefix,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class WebhookEndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(description="The signing secret, shown only this once.")


@strawberry.type
class WebhookAttempt:
    series: int
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    response_excerpt: str = strawberry.field(description="The answer's first 1,024 bytes.")
    error: str | None
    succeeded: bool

    @classmethod
    def from_row(cls, row: models.WebhookAttempt) -> "WebhookAttempt":
        return cls(
            series=row.series,
            number=row.number,
            started_at=row.started_at,
            duration_ms=row.duration_ms,
            status_code=row.status_code,
            response_excerpt=row.response_excerpt,
            error=row.error,
            succeeded=row.succeeded,
        )


@strawberry.type
class WebhookDelivery:
    id: UUID = strawberry.field(description="The delivery id receivers deduplicate on.")
    endpoint_id: UUID
    event_id: str | None
    event_type: str
    status: WebhookDeliveryStatus
    series: int
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None
    body: JSON = strawberry.field(description="The JSON document every attempt POSTs.")
    attempts: list[WebhookAttempt]

    @classmethod
    def from_row(
        cls, row: models.WebhookDelivery, attempts: list[models.WebhookAttempt]
    ) -> "WebhookDelivery":
        body: Any = json.loads(row.body)
        return cls(
            id=row.id,
            endpoint_id=row.endpoint_id,
            event_id=str(row.event_id) if row.event_id is not None else None,
            event_type=row.event_type,
            status=WebhookDeliveryStatus(row.status),
            series=row.series,
            attempt_count=row.attempt_count,
            # A pending row's next attempt is shown; a claim's lease is not an attempt time.
            next_attempt_at=row.next_attempt_at if row.claim_id is None else None,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=row.created_at,
            completed_at=row.completed_at,
            body=JSON(body),
            attempts=[WebhookAttempt.from_row(a) for a in attempts],
        )


@strawberry.type
class WebhookDeliveryConnection:
    items: list[WebhookDelivery]
    page_info: PageInfo


@strawberry.input
class CreateWebhookEndpointInput:
    url: str
    description: str = ""
    event_types: list[str] | None = strawberry.field(
        default=None, description="Defaults to every notification type."
    )
    enabled: bool = True


@strawberry.input
class UpdateWebhookEndpointInput:
    id: UUID
    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    enabled: bool | None = None


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="The notification types an endpoint can subscribe to.")
    def webhook_event_types(self) -> list[str]:
        return list(webhooks.WEBHOOK_EVENT_TYPES)

    @strawberry.field
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        async with info.context.db.read() as session:
            rows = await webhooks.list_endpoints(session, info.context.principal)
        return [WebhookEndpoint.from_row(r) for r in rows]

    @strawberry.field
    async def webhook_endpoint(self, info: Info, id: UUID) -> WebhookEndpoint | None:
        async with info.context.db.read() as session:
            row = await webhooks.get_endpoint(session, info.context.principal, id)
        return WebhookEndpoint.from_row(row) if row else None

    @strawberry.field(description="Deliveries, newest first; `after` is a page's endCursor.")
    async def webhook_deliveries(
        self,
        info: Info,
        endpoint_id: UUID | None = None,
        status: WebhookDeliveryStatus | None = None,
        first: int = 25,
        after: str | None = None,
    ) -> WebhookDeliveryConnection:
        async with info.context.db.read() as session:
            page = await webhooks.list_deliveries(
                session,
                info.context.principal,
                endpoint_id=endpoint_id,
                status=status.value if status is not None else None,
                first=first,
                after=after,
            )
        return WebhookDeliveryConnection(
            items=[WebhookDelivery.from_row(d, page.attempts[d.id]) for d in page.items],
            page_info=PageInfo(end_cursor=page.end_cursor, has_next_page=page.has_next_page),
        )

    @strawberry.field
    async def webhook_delivery(self, info: Info, id: UUID) -> WebhookDelivery | None:
        async with info.context.db.read() as session:
            found = await webhooks.get_delivery(session, info.context.principal, id)
        return WebhookDelivery.from_row(*found) if found else None


async def _delivery_view(info: Info, delivery_id: UUID) -> WebhookDelivery:
    async with info.context.db.read() as session:
        found = await webhooks.get_delivery(session, info.context.principal, delivery_id)
    assert found is not None
    return WebhookDelivery.from_row(*found)


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(description="Add an endpoint; its signing secret is returned only once.")
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointWithSecret:
        async with info.context.db.write() as uow:
            created = await webhooks.create_endpoint(
                uow,
                info.context.principal,
                url=input.url,
                description=input.description,
                event_types=input.event_types,
                enabled=input.enabled,
            )
        return WebhookEndpointWithSecret(
            endpoint=WebhookEndpoint.from_row(created.endpoint), secret=created.secret
        )

    @strawberry.mutation(description="Change an endpoint; disabling it fails what is pending.")
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpoint:
        async with info.context.db.write() as uow:
            row = await webhooks.update_endpoint(
                uow,
                info.context.principal,
                input.id,
                url=input.url,
                description=input.description,
                event_types=input.event_types,
                enabled=input.enabled,
            )
        return WebhookEndpoint.from_row(row)

    @strawberry.mutation(description="Remove an endpoint with its deliveries.")
    async def delete_webhook_endpoint(self, info: Info, id: UUID) -> bool:
        async with info.context.db.write() as uow:
            return await webhooks.delete_endpoint(uow, info.context.principal, id)

    @strawberry.mutation(description="A new signing secret, returned only once; the old stops.")
    async def rotate_webhook_secret(self, info: Info, id: UUID) -> WebhookEndpointWithSecret:
        async with info.context.db.write() as uow:
            rotated = await webhooks.rotate_secret(uow, info.context.principal, id)
        return WebhookEndpointWithSecret(
            endpoint=WebhookEndpoint.from_row(rotated.endpoint), secret=rotated.secret
        )

    @strawberry.mutation(description="Queue a webhook.test delivery to one endpoint.")
    async def test_webhook(self, info: Info, id: UUID) -> WebhookDelivery:
        async with info.context.db.write() as uow:
            delivery = await webhooks.send_test_delivery(uow, info.context.principal, id)
        return await _delivery_view(info, delivery.id)

    @strawberry.mutation(description="Send a finished delivery again, as a new attempt series.")
    async def redeliver_webhook(self, info: Info, delivery_id: UUID) -> WebhookDelivery:
        async with info.context.db.write() as uow:
            delivery = await webhooks.redeliver(uow, info.context.principal, delivery_id)
        return await _delivery_view(info, delivery.id)
