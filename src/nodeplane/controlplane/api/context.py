"""Per-request context handed to every resolver."""

import asyncio
from dataclasses import dataclass, field
from functools import cached_property

from starlette.requests import Request
from starlette.responses import Response
from strawberry.types import Info as StrawberryInfo

from nodeplane.controlplane.api.loaders import Loaders
from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.store.database import Database

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

    @cached_property
    def loaders(self) -> Loaders:
        """Batch loaders of this request."""
        return Loaders(self)


Info = StrawberryInfo[Context, None]
