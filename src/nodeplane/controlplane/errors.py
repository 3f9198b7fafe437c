"""Typed domain errors; the API turns each into a GraphQL error with `extensions.code`."""

from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from nodeplane.protocol.executor_api import INSTANCE_CONFLICT_CODE
from nodeplane.protocol.logs import (
    EXECUTOR_NOT_ANSWERING_CODE,
    EXECUTOR_OFFLINE_CODE,
    LOGS_UNAVAILABLE_CODE,
)


class ErrorCode(StrEnum):
    """Stable, machine-readable error codes shared by the API, the CLI and the UI."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_INPUT = "invalid_input"
    INVALID_NODE_CONFIG = "invalid_node_config"
    CHAIN_NOT_SUPPORTED_BY_EXECUTOR = "chain_not_supported_by_executor"
    REVISION_CONFLICT = "revision_conflict"
    NODE_DELETING = "node_deleting"
    ALREADY_EXISTS = "already_exists"
    INVALID_ACTION = "invalid_action"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    # Another process of the same executor (a cloned host, a second agent) is live: this one
    # is refused until that one has been silent for the heartbeat timeout.
    EXECUTOR_INSTANCE_CONFLICT = INSTANCE_CONFLICT_CODE
    # A webhook URL with plain HTTP to a host that is not loopback by name (webhooks/urls.py).
    INSECURE_WEBHOOK_URL = "insecure_webhook_url"
    # A webhook URL whose address no delivery may go to (link-local, unspecified, multicast).
    WEBHOOK_ADDRESS_REFUSED = "webhook_address_refused"
    # The server is saturated (database pool, document worker); retrying later succeeds.
    UNAVAILABLE = "unavailable"
    # Live logs: the executor kind keeps no logs to read (the operator, without a kubelet), the
    # executor is offline, or it did not answer a log session in time.
    LOGS_UNAVAILABLE = LOGS_UNAVAILABLE_CODE
    EXECUTOR_OFFLINE = EXECUTOR_OFFLINE_CODE
    EXECUTOR_NOT_ANSWERING = EXECUTOR_NOT_ANSWERING_CODE


class DomainError(Exception):
    """An expected failure with a code, a human message and optional field and details."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details = details or {}

    def extensions(self) -> dict[str, Any]:
        """The GraphQL `extensions` object for this error."""
        ext: dict[str, Any] = {"code": self.code.value}
        if self.field is not None:
            ext["field"] = self.field
        ext.update(self.details)
        return ext


def not_found(what: str) -> DomainError:
    """The error for anything the caller may not see or that does not exist (never a hint)."""
    return DomainError(ErrorCode.NOT_FOUND, f"{what} not found")


# How long a caller whose request ran out its time budget is asked to wait before retrying.
TIME_BUDGET_RETRY_AFTER_SECONDS = 5


def time_budget_exceeded(budget: float) -> DomainError:
    """The error for a request that ran longer than its time budget (`budget` seconds).

    `unavailable`, not the caller's fault: a document too costly to answer in time is refused
    before it runs (api/document_guard.py), so one that runs out its budget waited on a
    saturated server, database or a lock held elsewhere, as the database's own refusals do.
    The hint lets executors (which wait it out) take load off a server that is this far behind.
    """
    return DomainError(
        ErrorCode.UNAVAILABLE,
        f"the request took longer than its {budget:g} s budget; the server is busy, retry later",
        details={"limit": "time", "retryAfterSeconds": TIME_BUDGET_RETRY_AFTER_SECONDS},
    )


def forbidden(message: str = "you are not allowed to do this") -> DomainError:
    """The error for an authenticated caller without the right to act."""
    return DomainError(ErrorCode.FORBIDDEN, message)


def validation_error(exc: ValidationError, code: ErrorCode, field: str) -> DomainError:
    """A typed error listing every problem pydantic found, each with its dotted path."""
    problems = [
        {"path": ".".join(str(part) for part in err["loc"]), "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{p['path'] or field}: {p['message']}" for p in problems[:5])
    return DomainError(
        code, f"invalid {field}: {summary}", field=field, details={"problems": problems}
    )
