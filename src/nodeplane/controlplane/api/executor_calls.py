"""The executors' two frequent calls, answered without the GraphQL executor.

A fleet's requests are mostly its executors' heartbeats (`syncExecutor`) and spec long-polls
(`executorSpecs`), each sent with one known document (protocol/executor_documents.py, persisted
queries in effect). Through graphql-core each pays for a second parse of the body, the
document's execution field by field, Starlette's request and response objects, and, for a held
poll, that execution's state kept for up to 30 s (docs/benchmarks.md, issue 8). When a request
carries exactly one of those documents with an executor's key, this module runs what the field's
resolver runs (the same validation, the same service call, in the same order) and sends the
bytes the GraphQL path would send: the data as the document selects it, or the errors with the
field's location and path, formatted and logged by the GraphQL view's own functions.

Anything it does not take (another document, no key, a key that is not an executor's, a key it
cannot check because the database is busy) is handed on to the GraphQL path before anything was
done, which decides it exactly as before. `tests/controlplane/test_executor_calls.py` sends
calls both ways and compares status, headers and body bytes.
"""

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any
from uuid import UUID

import structlog
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, parse
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nodeplane.controlplane.api.context import bearer_token, instance_header, with_instance
from nodeplane.controlplane.api.validation import json_list, parse_wire
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import time_budget_exceeded
from nodeplane.controlplane.metrics.instruments import executor_calls
from nodeplane.controlplane.metrics.request_labels import OPERATION_SCOPE_KEY
from nodeplane.controlplane.services import executors
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.services.moved_syncs import MovedSyncs
from nodeplane.controlplane.store.database import Database
from nodeplane.protocol import INSTANCE_HEADER, KnownRevision, SyncExecutorRequest
from nodeplane.protocol.executor_documents import POLL_SPECS, SYNC_EXECUTOR

log = structlog.get_logger(__name__)

# Where the body guard leaves a parsed body that carries one of the documents (app.py), and
# where this module leaves the principal it authenticated when it hands the request on.
EXECUTOR_BODY_SCOPE_KEY = "nodeplane.executor_body"
PRINCIPAL_SCOPE_KEY = "nodeplane.principal"

SYNC = "syncExecutor"
POLL = "executorSpecs"
_BODY_KEYS = frozenset({"query", "variables", "operationName"})
# Each document's text → its root field, the operation names it may be sent with, and the
# variables it declares (required ones first).
_DOCUMENTS: dict[str, tuple[str, tuple[str | None, ...], frozenset[str], frozenset[str]]] = {
    SYNC_EXECUTOR: (SYNC, (None, "Sync"), frozenset({"input"}), frozenset({"input"})),
    POLL_SPECS: (POLL, (None, "Poll"), frozenset({"wait"}), frozenset({"known", "wait"})),
}
# graphql-core coerces a Float variable from any finite JSON number; this path takes the ones
# that convert exactly, and hands anything else (a bool, a string, a huge integer) on.
_LARGEST_EXACT_INTEGER = 2**53


def _field_node(document: str) -> FieldNode:
    operation = parse(document).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    field = operation.selection_set.selections[0]
    assert isinstance(field, FieldNode)
    return field


# The root field of each document as graphql-core locates an error raised in its resolver.
_FIELD_NODES = {name: _field_node(text) for text, (name, *_rest) in _DOCUMENTS.items()}


class ExecutorBody:
    """A request body that the body guard found to carry one of the executors' documents:
    its root field, the blake2b digest of its bytes, and the bytes parsed. The parse is made
    on first use when the guard knew the digest (a repeated heartbeat, which the guard passed
    before: the same bytes pass the same checks), so a sync answered from a kept look is
    never parsed."""

    __slots__ = ("_parsed", "_raw", "digest", "operation")

    def __init__(
        self, operation: str, digest: bytes, raw: bytes, parsed: dict[str, Any] | None = None
    ) -> None:
        self.operation = operation
        self.digest = digest
        self._raw = raw
        self._parsed = parsed

    @property
    def variables(self) -> dict[str, Any]:
        """The body's variables (`executor_operation` made sure they are an object)."""
        if self._parsed is None:
            self._parsed = json.loads(self._raw)
        variables: dict[str, Any] = self._parsed["variables"]
        return variables


def executor_operation(parsed: Any) -> str | None:
    """The root field when a parsed GraphQL body is one of the executors' own documents, sent
    with the variables it declares and nothing more; else None."""
    if not isinstance(parsed, dict) or not parsed.keys() <= _BODY_KEYS:
        return None
    known = _DOCUMENTS.get(parsed.get("query"))  # type: ignore[arg-type]
    if known is None:
        return None
    field, names, required, declared = known
    variables = parsed.get("variables")
    if (
        parsed.get("operationName") not in names
        or not isinstance(variables, dict)
        or not required <= variables.keys() <= declared
    ):
        return None
    # graphql-core refuses a null for a non-null variable before any resolver runs.
    if field == SYNC and variables["input"] is None:
        return None
    if field == POLL and _wait_seconds(variables["wait"]) is None:
        return None
    return field


def _sync_payload(executor_id: UUID, name: str, rejected: dict[UUID, str]) -> dict[str, Any]:
    """syncExecutor's data as SYNC_EXECUTOR selects it."""
    return {
        "data": {
            SYNC: {
                "executor": {"id": str(executor_id), "name": name},
                "rejected": [
                    {"nodeId": str(node_id), "reason": reason}
                    for node_id, reason in rejected.items()
                ],
            }
        }
    }


def _wait_seconds(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return float(raw) if abs(raw) <= _LARGEST_EXACT_INTEGER else None
    if isinstance(raw, float) and math.isfinite(raw):
        return raw
    return None


ErrorPayload = Callable[[list[GraphQLError]], dict[str, Any]]


class ExecutorCalls:
    """Answers an executor's sync or spec poll, or says it did not so the GraphQL path does."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        heartbeat: Heartbeat,
        encode: Callable[[object], str],
        error_payload: ErrorPayload,
    ) -> None:
        self.db = db
        self.settings = settings
        self.heartbeat = heartbeat
        # The GraphQL view's own encoder and error formatting (which also logs): the same bytes
        # and log lines for the same outcome.
        self.encode = encode
        self.error_payload = error_payload
        # Each executor's last sync answered by this process, as a digest of its bytes (an
        # executor's connection stays with one worker process).
        self._last_sync: dict[UUID, bytes] = {}
        # Syncs whose metric values alone moved, stored a batch at a time (services/moved_syncs.py).
        self.moved = MovedSyncs(db)

    async def answer(self, scope: Scope, receive: Receive, send: Send, body: ExecutorBody) -> bool:
        """Send the answer to `body` and return True, or send nothing and return False."""
        operation = body.operation
        principal = await self._executor(scope)
        if principal is None:
            executor_calls.labels(operation=operation, path="graphql").inc()
            return False
        scope[OPERATION_SCOPE_KEY] = operation
        payload = await self._payload(scope, principal, body)
        response = Response(self.encode(payload), media_type="application/json")
        await response(scope, receive, send)
        executor_calls.labels(operation=operation, path="direct").inc()
        return True

    async def _executor(self, scope: Scope) -> Principal | None:
        """The executor the request's key names; None to hand the request on."""
        token = bearer_token(Headers(scope=scope))
        if token is None:
            return None
        try:
            async with asyncio.timeout(self.settings.request_time_budget):
                principal = await authenticate(self.db, token)
        except Exception as error:
            # Busy, unreachable or refused: the GraphQL path meets the same condition and
            # answers it in its own words.
            log.debug("executor_calls.handed_on", error=type(error).__name__)
            return None
        if principal is None or not principal.is_executor:
            return None
        # Authenticated once: the GraphQL path takes the principal from here if it gets the call.
        scope[PRINCIPAL_SCOPE_KEY] = principal
        return principal

    async def _payload(
        self, scope: Scope, principal: Principal, body: ExecutorBody
    ) -> dict[str, Any]:
        operation = body.operation
        budget = self.settings.request_time_budget
        # As the GraphQL path's budget: a long-poll document may hold the request longer.
        limit = budget + (self.settings.max_poll_wait if operation == POLL else 0.0)
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                if operation == SYNC:
                    return await self._sync(scope, principal, body)
                return await self._poll(scope, principal, body.variables)
        except TimeoutError as error:
            if not deadline.expired():
                return self._field_error(operation, error)
            return self.error_payload(
                [GraphQLError("", original_error=time_budget_exceeded(budget))]
            )
        except Exception as error:
            return self._field_error(operation, error)

    def _field_error(self, operation: str, error: Exception) -> dict[str, Any]:
        """An error raised in the field's resolver, as graphql-core locates it."""
        located = GraphQLError(
            str(error), _FIELD_NODES[operation], path=[operation], original_error=error
        )
        return self.error_payload([located])

    async def _sync(self, scope: Scope, principal: Principal, body: ExecutorBody) -> dict[str, Any]:
        headers = Headers(scope=scope)
        body_digest = body.digest
        # What decides the answer besides the stored state: the bytes, the instance header
        # (which with_instance folds into the request) and the key.
        fingerprint = (body_digest, headers.get(INSTANCE_HEADER), principal.api_key_id)
        if kept := executors.kept_sync(self.db, principal, fingerprint):
            return _sync_payload(kept.executor_id, kept.name, {})
        # Mutation.sync_executor, in its order.
        sent = body.variables["input"]
        request = with_instance(
            parse_wire(SyncExecutorRequest, sent, field="input"), instance_header(headers)
        )
        executor_id = principal.executor_id
        last = self._last_sync.get(executor_id) if executor_id is not None else None
        # A sync whose bytes differ from the executor's last one here (new metric values, a new
        # status) is not steady: asking would cost a read to learn it. It is most often one
        # whose metric values alone moved, stored with the others waiting; anything else is
        # handed back. Only hints: the write path decides any sync exactly, steady or not.
        result = None
        steady_first = last in (None, body_digest)
        if not steady_first:
            result = await self.moved.store(principal, request, fingerprint)
        if result is None:
            result = await executors.sync(
                self.db,
                principal,
                request,
                self.heartbeat,
                steady_first=steady_first,
                fingerprint=fingerprint,
            )
        if executor_id is not None:
            self._last_sync[executor_id] = body_digest
        executor = result.executor
        return _sync_payload(executor.id, executor.name, result.rejected)

    async def _poll(
        self, scope: Scope, principal: Principal, variables: dict[str, Any]
    ) -> dict[str, Any]:
        # Query.executor_specs, in its order.
        held = [
            parse_wire(KnownRevision, item, field="known")
            for item in json_list(variables.get("known"), "known")
        ]
        wait = _wait_seconds(variables["wait"])
        assert wait is not None  # executor_operation took only such documents
        instance = instance_header(Headers(scope=scope))
        async with executors.recording_refusals(self.db):
            pending = await executors.poll_specs(
                self.db,
                principal,
                held,
                wait,
                max_wait=self.settings.max_poll_wait,
                instance=instance,
                heartbeat=self.heartbeat,
            )
        return {
            "data": {
                POLL: [
                    {
                        "nodeId": str(m.node_id),
                        "name": m.name,
                        "revision": m.revision,
                        "spec": m.spec.to_wire() if m.spec else None,
                        "deleted": m.deleted,
                        "retainData": m.retain_data,
                    }
                    for m in pending
                ]
            }
        }
