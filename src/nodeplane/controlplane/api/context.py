"""Per-request context handed to every resolver."""

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from strawberry.types import Info as StrawberryInfo

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


Info = StrawberryInfo[Context, None]
