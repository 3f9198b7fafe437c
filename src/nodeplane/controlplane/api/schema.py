"""The GraphQL schema and its HTTP view: authentication, limits, error codes, GraphiQL."""

import asyncio
import json
from collections.abc import Iterable
from typing import Any, NoReturn

import strawberry
import structlog
from graphql import ExecutionResult as CoreExecutionResult
from graphql import GraphQLError, GraphQLObjectType
from graphql.execution import ExperimentalIncrementalExecutionResults
from graphql.type.definition import GraphQLResolveInfoHelpers
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from nodeplane.controlplane.api.context import SESSION_COOKIE, Context, bearer_token
from nodeplane.controlplane.api.document_guard import DocumentGuard, DocumentWork, long_poll_seconds
from nodeplane.controlplane.api.executor_calls import (
    EXECUTOR_BODY_SCOPE_KEY,
    PRINCIPAL_SCOPE_KEY,
    ExecutorCalls,
)
from nodeplane.controlplane.api.limits import DocumentLimits, DocumentReport
from nodeplane.controlplane.api.mutations import Mutation
from nodeplane.controlplane.api.queries import Query
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode, time_budget_exceeded
from nodeplane.controlplane.metrics.request_labels import OPERATION_SCOPE_KEY, operation_label
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.store.database import Database

log = structlog.get_logger(__name__)

DOCUMENT_LIMITS = DocumentLimits()
# One per process: the worker thread and the caches of documents already read.
DOCUMENT_WORK = DocumentWork(DOCUMENT_LIMITS)


def _document_policy(context: object, report: DocumentReport) -> None:
    """What depends on the caller: introspection in production, and long-poll time budgets."""
    if not isinstance(context, Context):
        return
    # Names an API request in the latency histogram (metrics/request_metrics.py); the key is
    # there only for requests to the API itself (get_context), not for the pages' own queries.
    scope = context.request.scope
    if OPERATION_SCOPE_KEY in scope:
        scope[OPERATION_SCOPE_KEY] = operation_label(report.root_fields, ROOT_FIELDS)
    if report.introspection and context.principal is None and context.settings.production:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "sign in to read the schema")
    extra = long_poll_seconds(report, context.settings.max_poll_wait)
    if extra and context.deadline is not None and (when := context.deadline.when()) is not None:
        context.deadline.reschedule(when + extra)


def _execution_finished(*_args: object) -> NoReturn:
    raise RuntimeError("the GraphQL execution has finished")


_FINISHED = GraphQLResolveInfoHelpers(gather=_execution_finished, track=_execution_finished)


class SerialRootExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Runs a query's root fields one after another, as graphql-core does for mutations.

    Each root field opens its own database session; run side by side, a hundred aliases would
    take a hundred connections from the pool at once. One at a time, a request holds one.
    """

    def build_response(
        self, data: dict[str, Any] | None
    ) -> CoreExecutionResult | ExperimentalIncrementalExecutionResults:
        response = super().build_response(data)
        # The helpers hold bound methods of this context, a reference cycle through everything
        # the request touched (its Context, the Starlette request, loaded rows): left in place,
        # every request became garbage only the cyclic collector frees, and its full passes
        # stalled the event loop for 100 ms and more under load (docs/benchmarks.md).
        self.async_helpers = _FINISHED
        return response

    def execute_root_grouped_field_set(
        self,
        root_type: GraphQLObjectType,
        root_value: Any,
        grouped_field_set: Any,
        serially: bool,
        position_context: Any,
    ) -> Any:
        return super().execute_root_grouped_field_set(
            root_type, root_value, grouped_field_set, True, position_context
        )


def _refusal(error: DomainError) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[GraphQLError(error.message, original_error=error)])


class NodeplaneSchema(strawberry.Schema):
    """Schema with a time budget per request that logs only unexpected errors."""

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        budget = (
            context_value.settings.request_time_budget
            if isinstance(context_value, Context)
            else Settings().request_time_budget
        )
        deadline = asyncio.timeout(budget)
        if isinstance(context_value, Context):
            context_value.deadline = deadline
        try:
            async with deadline:
                return await super().execute(
                    query,
                    variable_values,
                    context_value,
                    root_value,
                    operation_name,
                    allowed_operation_types,
                    operation_extensions,
                )
        except TimeoutError:
            if not deadline.expired():
                raise
            return _refusal(time_budget_exceeded(budget))

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            original = error.original_error
            if original is None or isinstance(original, DomainError | GraphQLError):
                continue
            if isinstance(original, PoolTimeoutError):
                log.warning("graphql.database_busy", path=error.path)
                continue
            if isinstance(original, OperationalError):
                # Locked, unreachable or restarting: the caller is told to retry.
                log.warning("graphql.database_unavailable", path=error.path, error=str(original))
                continue
            log.error(
                "graphql.unexpected_error", error=repr(original), path=error.path, exc_info=original
            )


schema = NodeplaneSchema(
    query=Query,
    mutation=Mutation,
    extensions=[lambda: DocumentGuard(DOCUMENT_WORK, _document_policy)],
    execution_context_class=SerialRootExecutionContext,
)


# The schema's root fields: the only GraphQL names a metric label may carry.
ROOT_FIELDS = frozenset(
    name
    for root in (schema._schema.query_type, schema._schema.mutation_type)
    if root is not None
    for name in root.fields
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
    elif isinstance(original, PoolTimeoutError | OperationalError):
        formatted["message"] = "the server is busy; retry in a moment"
        formatted["extensions"] = {"code": ErrorCode.UNAVAILABLE.value, "retryAfterSeconds": 1}
    elif original is not None and not isinstance(original, GraphQLError):
        formatted["message"] = "internal error"
        formatted["extensions"] = {"code": "internal"}
    else:
        # Syntax, validation and variable-coercion errors from graphql-core (a missing variable
        # arrives wrapping another GraphQLError).
        formatted["extensions"] = {"code": ErrorCode.BAD_REQUEST.value}
    return formatted


def _bearer(request: Request) -> tuple[str | None, bool]:
    token = bearer_token(request.headers)
    if token is not None:
        return token, False
    return request.cookies.get(SESSION_COOKIE), True


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with nodeplane's context, error format and response cap."""

    def __init__(self, db: Database, settings: Settings, heartbeat: Heartbeat) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.production else "graphiql",
            allow_queries_via_get=False,
        )
        self.db = db
        self.settings = settings
        self.heartbeat = heartbeat
        self.executor_calls = ExecutorCalls(
            db, settings, heartbeat, self.encode_json, self.error_payload
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        carried = scope.pop(EXECUTOR_BODY_SCOPE_KEY, None)
        if carried is not None and await self.executor_calls.answer(scope, receive, send, carried):
            return
        try:
            await super().__call__(scope, receive, send)
        except (PoolTimeoutError, OperationalError) as exc:
            # Raised before execution began (signing the caller in, in get_context), so nothing
            # has been sent: answer as execution does for the same errors (_format_error).
            log.warning("graphql.database_busy_at_sign_in", error=str(exc)[:200])
            body = _error_body(
                ErrorCode.UNAVAILABLE, "the server is busy; retry in a moment", retryAfterSeconds=1
            )
            await JSONResponse(body, status_code=503, headers={"retry-after": "1"})(
                scope, receive, send
            )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        assert isinstance(request, Request) and isinstance(response, Response)
        request.scope[OPERATION_SCOPE_KEY] = ""  # named once its document is read
        token, from_cookie = _bearer(request)
        # A cookie rides along on cross-site requests; only JSON bodies (which need CORS) count.
        if from_cookie and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            token = None
        # The steady-heartbeat path may have authenticated this very request already.
        principal = request.scope.pop(PRINCIPAL_SCOPE_KEY, None) or await authenticate(
            self.db, token
        )
        return Context(
            db=self.db,
            settings=self.settings,
            principal=principal,
            request=request,
            response=response,
            heartbeat_rules=self.heartbeat,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        data: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            data["errors"] = [_format_error(e) for e in result.errors]
        return data

    def error_payload(self, errors: list[GraphQLError]) -> dict[str, Any]:
        """The answer for a result with no data and these errors, logged as execution logs
        them: what `process_result` makes of it."""
        schema.process_errors(errors)
        return {"data": None, "errors": [_format_error(e) for e in errors]}

    def encode_json(self, data: object) -> str:
        """JSON without NaN or Infinity, and never larger than the response cap."""
        try:
            encoded = json.dumps(data, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return json.dumps(
                _error_body(ErrorCode.INVALID_INPUT, "the answer holds a number JSON cannot carry")
            )
        if len(encoded) > self.settings.max_response_bytes:
            return json.dumps(
                _error_body(
                    ErrorCode.BAD_REQUEST,
                    f"the answer would be larger than {self.settings.max_response_bytes} bytes; "
                    "ask for fewer fields or smaller pages",
                    limit="responseBytes",
                )
            )
        return encoded


def _error_body(code: ErrorCode, message: str, **extensions: object) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [{"message": message, "extensions": {"code": code, **extensions}}],
    }
