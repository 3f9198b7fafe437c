"""Who is signed in to the web UI, and running the GraphQL API in-process as that user."""

from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response

from nodeplane.controlplane.api.context import SESSION_COOKIE, Context
from nodeplane.controlplane.api.schema import schema
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.store.database import Database


async def current_user(db: Database, request: Request) -> Principal | None:
    """The signed-in user behind the session cookie (API keys do not sign in to the UI)."""
    principal = await authenticate(db, request.cookies.get(SESSION_COOKIE))
    if principal is None or principal.is_executor:
        return None
    return principal


class PageQuery:
    """Runs GraphQL documents for a page with the caller's principal, as the API would."""

    def __init__(
        self, db: Database, settings: Settings, principal: Principal, request: Request
    ) -> None:
        self._context = Context(
            db=db, settings=settings, principal=principal, request=request, response=Response()
        )

    async def __call__(self, document: str, variables: dict[str, Any] | None = None) -> Any:
        result = await schema.execute(
            document, variable_values=variables or {}, context_value=self._context
        )
        if result.errors:
            error = result.errors[0]
            original = error.original_error
            if isinstance(original, DomainError):
                raise original
            if original is None or isinstance(original, GraphQLError):
                raise DomainError(ErrorCode.BAD_REQUEST, error.message)
            # A fault of the server, not of the request: its text (SQL, driver messages) is
            # not for the page, and the schema has logged it.
            raise original
        return result.data
