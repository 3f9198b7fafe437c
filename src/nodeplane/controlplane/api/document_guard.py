"""Parsing, measuring and validating GraphQL documents off the event loop, with limits and a cache.

The server answers every client from one event loop, so no document may hold it: parsing and
validation run on one worker thread, after `limits.measure_document` has checked in linear time
that validation will be cheap. Real clients (agents, the CLI, the UI) send the same few documents
again and again, so parse and validation results are cached by the document's text; only new
documents queue for the worker, and when too many wait the newest is refused at once.
"""

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from nodeplane.controlplane.api.limits import (
    DocumentLimits,
    DocumentRefused,
    DocumentReport,
    measure_document,
)
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.protocol import MAX_POLL_WAIT_SECONDS

T = TypeVar("T")

# Root fields that hold the request open on purpose; their wait is added to the time budget.
LONG_POLL_FIELDS = frozenset({"executorSpecs", "executorLogSessions"})


@dataclass(frozen=True)
class Verdict:
    """The outcome of measuring and validating one document text."""

    refusal: DomainError | None
    errors: list[GraphQLError]
    report: DocumentReport | None


class _LRU(Generic[T]):
    """A small thread-safe LRU map (the worker writes, the event loop reads)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[str, T] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def lookup(self, key: str) -> T | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def store(self, key: str, value: T) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class DocumentWork:
    """One worker thread for document work, a bound on what waits for it, and the caches."""

    def __init__(self, limits: DocumentLimits, max_waiting: int = 32, cache_size: int = 512):
        self.limits = limits
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graphql-documents")
        self._waiting = 0
        self._parsed: _LRU[DocumentNode | GraphQLError] = _LRU(cache_size)
        self._verdicts: _LRU[Verdict] = _LRU(cache_size)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._waiting >= self.max_waiting:
            raise DomainError(
                ErrorCode.RATE_LIMITED,
                "the server is busy reading other new documents; retry in a moment",
                details={"retryAfterSeconds": 1},
            )
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        finally:
            self._waiting -= 1

    async def parse(self, query: str) -> DocumentNode:
        """The parsed document; GraphQL syntax errors and size refusals are raised."""
        limits = self.limits
        if len(query) > limits.max_chars:
            raise DocumentRefused(
                "chars",
                f"the document is longer than {limits.max_chars} characters",
                limits.max_chars,
            )
        cached = self._parsed.lookup(query)
        if cached is None:

            def work() -> DocumentNode | GraphQLError:
                try:
                    return parse(
                        query,
                        max_lexical_tokens=limits.max_tokens,
                        max_comments=limits.max_comments,
                        max_source_length=limits.max_chars,
                    )
                except GraphQLError as error:
                    return error
                except RecursionError:
                    return GraphQLError("the document is nested too deeply")

            cached = await self._run(work)
            self._parsed.store(query, cached)
        if isinstance(cached, GraphQLError):
            raise _typed_syntax_error(cached)
        return cached

    async def verdict(
        self,
        query: str,
        document: DocumentNode,
        schema: GraphQLSchema,
        rules: tuple[type[ASTValidationRule], ...],
    ) -> Verdict:
        """Limits first, then graphql-core's validation, both on the worker; cached by text."""
        cached = self._verdicts.lookup(query)
        if cached is None:

            def work() -> Verdict:
                try:
                    report = measure_document(schema, document, self.limits)
                except DomainError as refusal:
                    return Verdict(refusal, [], None)
                except RecursionError:
                    return Verdict(
                        DocumentRefused("depth", "the document is nested too deeply"), [], None
                    )
                return Verdict(None, validate_document(schema, document, rules), report)

            cached = await self._run(work)
            self._verdicts.store(query, cached)
        return cached


def _typed_syntax_error(error: GraphQLError) -> DomainError:
    message = error.message
    if "tokens" in message or "source length" in message.lower() or "comments" in message:
        return DomainError(ErrorCode.BAD_REQUEST, message, details={"limit": "tokens"})
    return DomainError(ErrorCode.BAD_REQUEST, message)


class DocumentGuard(SchemaExtension):
    """Strawberry extension: parse and validate through `DocumentWork`, enforce the policies.

    `context_policy(context, report)` is called for every document that passed, before
    execution: it may refuse (introspection for anonymous callers in production) or adjust the
    request's time budget for long-polls.
    """

    def __init__(
        self, work: DocumentWork, context_policy: Callable[[object, DocumentReport], None]
    ):
        super().__init__()
        self.work = work
        self.context_policy = context_policy

    async def on_parse(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.graphql_document is None and ec.query:
            ec.graphql_document = await self.work.parse(ec.query)
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        assert ec.graphql_document is not None and ec.query is not None
        verdict = await self.work.verdict(
            ec.query, ec.graphql_document, ec.schema._schema, tuple(ec.validation_rules)
        )
        if verdict.refusal is not None:
            raise verdict.refusal
        assert verdict.report is not None
        self.context_policy(ec.context, verdict.report)
        # An empty list tells strawberry the document is validated (it skips its own pass).
        ec.pre_execution_errors = list(verdict.errors)
        yield


def long_poll_seconds(report: DocumentReport, max_wait: float = MAX_POLL_WAIT_SECONDS) -> float:
    """Extra time a document may hold the request: the spec long-poll's longest wait."""
    for roots in report.root_fields.values():
        if roots & LONG_POLL_FIELDS:
            return max_wait
    return 0.0
