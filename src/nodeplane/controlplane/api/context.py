"""Per-request context handed to every resolver."""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from uuid import UUID

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from strawberry.types import Info as StrawberryInfo

from nodeplane.controlplane.api.loaders import Loaders
from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.store.database import Database
from nodeplane.protocol.executor_api import INSTANCE_HEADER, SyncExecutorRequest

SESSION_COOKIE = "nodeplane_session"


@dataclass
class Context:
    """The database, settings, caller and HTTP request/response of one GraphQL request."""

    db: Database
    settings: Settings
    principal: Principal | None
    request: Request
    response: Response
    # The request's time budget, set when execution starts; long-polls extend it.
    deadline: asyncio.Timeout | None = field(default=None, compare=False)
    # The control plane's heartbeat rules; None where no executor calls (the web UI's queries).
    heartbeat_rules: Heartbeat | None = field(default=None, compare=False)

    @property
    def heartbeat(self) -> Heartbeat:
        """When executors count as silent (without a start-up grace where none was given)."""
        if self.heartbeat_rules is not None:
            return self.heartbeat_rules
        return Heartbeat(
            self.settings.heartbeat_timeout, started_at=datetime.min.replace(tzinfo=UTC)
        )

    @cached_property
    def instance_id(self) -> UUID | None:
        """The agent process an executor call comes from (the Nodeplane-Instance header)."""
        return instance_header(self.request.headers)

    @cached_property
    def loaders(self) -> Loaders:
        """Batch loaders of this request."""
        return Loaders(self)


Info = StrawberryInfo[Context, None]


def bearer_token(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer` header, or None."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def instance_header(headers: Headers) -> UUID | None:
    """The Nodeplane-Instance header's UUID, None without one; `invalid_input` if it is not."""
    raw = headers.get(INSTANCE_HEADER)
    if raw is None:
        return None
    try:
        return UUID(raw.strip())
    except ValueError:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"the {INSTANCE_HEADER} header must be a UUID",
            field=INSTANCE_HEADER,
        ) from None


def with_instance(request: SyncExecutorRequest, header: UUID | None) -> SyncExecutorRequest:
    """The sync naming the instance of its header; `invalid_input` if the two disagree."""
    if header is None:
        return request
    if request.instance_id is None:
        return request.model_copy(update={"instance_id": header})
    if header != request.instance_id:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            "input.instanceId and the Nodeplane-Instance header name different instances",
            field="instanceId",
        )
    return request
