"""The executor's steady heartbeat, answered without the GraphQL executor.

A fleet's most frequent request by far is an executor's `syncExecutor` repeating what it said
last time (docs/benchmarks.md, issue 8). Through graphql-core it pays for a second parse of the
body, the document's execution field by field, Starlette's request and response objects and
the resolver's ORM rows, several times the cost of deciding that nothing changed. Executors send
one known document for it (protocol/executor_documents.py, a persisted query in effect); when a
request carries exactly that document, this path authenticates the key, validates the input as
the resolver does and asks `executors.unchanged_sync`. If the sync is the steady case, it
answers here, with the bytes the GraphQL path would send. Anything else (another document, no
executor key, an input the resolver would refuse, a sync that changes anything, a database that
fails) falls through to the GraphQL path, which decides it exactly as before: this path can
only be faster, never different. `tests/controlplane/test_steady_sync_path.py` sends syncs both
ways and compares the bytes.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nodeplane.controlplane.api.context import bearer_token, instance_header, with_instance
from nodeplane.controlplane.api.validation import parse_wire
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError
from nodeplane.controlplane.metrics.instruments import steady_syncs
from nodeplane.controlplane.metrics.request_labels import OPERATION_SCOPE_KEY
from nodeplane.controlplane.services import executors
from nodeplane.controlplane.store.database import Database
from nodeplane.protocol import SyncExecutorRequest
from nodeplane.protocol.executor_documents import SYNC_EXECUTOR

log = structlog.get_logger(__name__)

# Where the body guard leaves a parsed body that carries the sync document (app.py), and where
# this path leaves the principal it authenticated when it hands the request on.
SYNC_BODY_SCOPE_KEY = "nodeplane.sync_body"
PRINCIPAL_SCOPE_KEY = "nodeplane.principal"
# Set when this path found the sync not steady (a `NotSteady`): the resolver goes straight to the
# write path, with the request as validated here.
NOT_STEADY_SCOPE_KEY = "nodeplane.sync_not_steady"


@dataclass(frozen=True)
class NotSteady:
    """A sync this path validated and found not steady: its input as sent, and as validated
    (with the instance header applied)."""

    input: Any
    request: SyncExecutorRequest

    def validated(self, input: Any) -> SyncExecutorRequest | None:
        """The validated request if `input` is the one validated here, else None."""
        return self.request if input == self.input else None


_BODY_KEYS = frozenset({"query", "variables", "operationName"})
_OPERATION_NAMES = (None, "Sync")


def carries_sync_document(parsed: Any) -> bool:
    """Whether a parsed GraphQL body is the executors' own sync document, and nothing more."""
    return (
        isinstance(parsed, dict)
        and parsed.get("query") == SYNC_EXECUTOR
        and parsed.keys() <= _BODY_KEYS
        and parsed.get("operationName") in _OPERATION_NAMES
        and isinstance(variables := parsed.get("variables"), dict)
        and variables.keys() == {"input"}
    )


class SteadySync:
    """Answers the steady sync, or says it did not so the GraphQL path answers."""

    def __init__(self, db: Database, settings: Settings, encode: Callable[[object], str]) -> None:
        self.db = db
        self.settings = settings
        # The GraphQL view's own encoder: the same bytes for the same answer.
        self.encode = encode

    async def answer(
        self, scope: Scope, receive: Receive, send: Send, parsed: dict[str, Any]
    ) -> bool:
        """Send the answer and return True, or send nothing and return False."""
        token = bearer_token(Headers(scope=scope))
        if token is None:
            steady_syncs.labels(outcome="handed_on").inc()
            return False
        try:
            async with asyncio.timeout(self.settings.request_time_budget):
                principal = await authenticate(self.db, token)
                payload = await self._steady_payload(scope, principal, parsed)
        except (DomainError, PoolTimeoutError, OperationalError, TimeoutError) as error:
            # The GraphQL path meets the same condition and answers it in its own words.
            log.debug("steady_sync.handed_on", error=type(error).__name__)
            payload = None
        except Exception:
            # A fault here must not cost the executor its heartbeat: the GraphQL path decides
            # the sync by itself, and reports a fault of its own as an internal error.
            log.exception("steady_sync.failed")
            payload = None
        if payload is None:
            steady_syncs.labels(outcome="handed_on").inc()
            return False
        scope[OPERATION_SCOPE_KEY] = "syncExecutor"
        # The response the GraphQL view makes (strawberry's create_response): the same headers.
        response = Response(self.encode(payload), media_type="application/json")
        await response(scope, receive, send)
        steady_syncs.labels(outcome="answered").inc()
        return True

    async def _steady_payload(
        self, scope: Scope, principal: Principal | None, parsed: Any
    ) -> dict[str, Any] | None:
        if principal is None or not principal.is_executor:
            return None
        # Authenticated once: the GraphQL path takes the principal from here if it gets the call.
        scope[PRINCIPAL_SCOPE_KEY] = principal
        # As the resolver reads them; what it would refuse (a DomainError) is handed on to it.
        sent = parsed["variables"]["input"]
        request = with_instance(
            parse_wire(SyncExecutorRequest, sent, field="input"),
            instance_header(Headers(scope=scope)),
        )
        result = await executors.unchanged_sync(self.db, principal, request)
        if result is None:
            # Validating the input is a fifth of a sync's cost: the resolver takes it from here.
            scope[NOT_STEADY_SCOPE_KEY] = NotSteady(sent, request)
            return None
        executor = result.executor
        return {
            "data": {
                "syncExecutor": {
                    "executor": {"id": str(executor.id), "name": executor.name},
                    "rejected": [],
                }
            }
        }
