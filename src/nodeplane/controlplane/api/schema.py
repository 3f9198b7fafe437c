"""The GraphQL schema and its HTTP view: authentication, error codes, GraphiQL in development."""

from typing import Any

import strawberry
import structlog
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import QueryDepthLimiter
from strawberry.extensions.query_depth_limiter import IgnoreContext
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionContext, ExecutionResult

from nodeplane.controlplane.api.context import SESSION_COOKIE, Context
from nodeplane.controlplane.api.mutations import Mutation
from nodeplane.controlplane.api.queries import Query
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.store.database import Database

log = structlog.get_logger(__name__)


class NodeplaneSchema(strawberry.Schema):
    """Schema that logs only unexpected errors; domain errors are answers, not incidents."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            original = error.original_error
            if original is None or isinstance(original, DomainError | GraphQLError):
                continue
            log.error(
                "graphql.unexpected_error", error=repr(original), path=error.path, exc_info=original
            )


MAX_QUERY_DEPTH = 10


def _is_introspection(ctx: IgnoreContext) -> bool:
    return ctx.field_name.startswith("__")


schema = NodeplaneSchema(
    query=Query,
    mutation=Mutation,
    # Nested selections are cheap to write and expensive to answer; no real client needs more.
    extensions=[QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH, should_ignore=_is_introspection)],  # type: ignore[list-item]
)


def _format_error(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = error.path
    if isinstance(original, DomainError):
        formatted["message"] = original.message
        formatted["extensions"] = original.extensions()
    elif original is not None and not isinstance(original, GraphQLError):
        formatted["message"] = "internal error"
        formatted["extensions"] = {"code": "internal"}
    else:
        # Syntax, validation and variable-coercion errors from graphql-core (a missing variable
        # arrives wrapping another GraphQLError).
        formatted["extensions"] = {"code": ErrorCode.BAD_REQUEST.value}
    return formatted


def _bearer(request: Request) -> tuple[str | None, bool]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), False
    return request.cookies.get(SESSION_COOKIE), True


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with nodeplane's context and error format."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.production else "graphiql",
            allow_queries_via_get=False,
        )
        self.db = db
        self.settings = settings

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        assert isinstance(request, Request) and isinstance(response, Response)
        token, from_cookie = _bearer(request)
        # A cookie rides along on cross-site requests; only JSON bodies (which need CORS) count.
        if from_cookie and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            token = None
        principal = await authenticate(self.db, token)
        return Context(
            db=self.db,
            settings=self.settings,
            principal=principal,
            request=request,
            response=response,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        data: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            data["errors"] = [_format_error(e) for e in result.errors]
        return data
