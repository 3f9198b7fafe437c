"""The executor's client for the control plane's GraphQL API (DESIGN §4); outbound only."""

import ssl
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import httpx

from nodeplane.protocol import (
    INSTANCE_HEADER,
    MAX_POLL_WAIT_SECONDS,
    AssignedNodeSpec,
    KnownRevision,
    RuntimeEvent,
    SyncExecutorRequest,
)
from nodeplane.protocol.executor_documents import (
    CONFIRM_TEARDOWN,
    POLL_LOG_SESSIONS,
    POLL_SPECS,
    POST_LOG_CHUNK,
    REPORT_RUNTIME_EVENTS,
    SYNC_EXECUTOR,
)
from nodeplane.protocol.logs import LogChunk, LogSessionRequest


class ControlPlaneError(Exception):
    """The control plane answered with an error; `code` is its `extensions.code`, and
    `retry_after` its `extensions.retryAfterSeconds` when it said when to come back (busy)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


def retry_after_of(extensions: dict[str, Any]) -> float | None:
    """An error's `retryAfterSeconds` in seconds, when it gives a sensible one."""
    hint = extensions.get("retryAfterSeconds")
    if isinstance(hint, int | float) and not isinstance(hint, bool) and 0 < hint <= 3600:
        return float(hint)
    return None


# Idle connections are kept for a minute: longer than the heartbeat interval, so each sync reuses
# one, and shorter than the control plane's keep-alive (75 s), so the client closes them first
# rather than sending on a connection the server is closing.
CONNECTION_LIMITS = httpx.Limits(max_keepalive_connections=20, keepalive_expiry=60.0)


class ControlPlaneClient:
    """Async client authenticated with an executor API key.

    `instance_id` names the agent process on every call (the Nodeplane-Instance header), so the
    control plane can refuse a second live process of the same executor.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        instance_id: UUID | None = None,
        max_poll_wait: float = MAX_POLL_WAIT_SECONDS,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"}
        if instance_id is not None:
            headers[INSTANCE_HEADER] = str(instance_id)
        # `verify` takes a TLS context made once (httpx otherwise loads the CA bundle per client).
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            verify=verify,
            limits=CONNECTION_LIMITS,
        )
        self._timeout = timeout
        # The longest wait a poll asks for (the protocol's cap unless a test lowers it).
        self._max_poll_wait = max_poll_wait

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(
        self, query: str, variables: dict[str, Any], *, request_timeout: float | None = None
    ) -> dict[str, Any]:
        response = await self._http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            timeout=request_timeout or self._timeout,
        )
        body = response.json()
        if body.get("errors"):
            err = body["errors"][0]
            extensions = err.get("extensions") or {}
            raise ControlPlaneError(
                extensions.get("code", "unknown"), err["message"], retry_after_of(extensions)
            )
        response.raise_for_status()
        data: dict[str, Any] = body["data"]
        return data

    async def sync(self, request: SyncExecutorRequest) -> dict[str, Any]:
        """Heartbeat with capabilities and observations; returns the executor and rejections."""
        data = await self._call(SYNC_EXECUTOR, {"input": request.to_wire()})
        result: dict[str, Any] = data["syncExecutor"]
        return result

    async def poll_specs(
        self, known: Sequence[KnownRevision], wait_seconds: float
    ) -> list[AssignedNodeSpec]:
        """Specs newer than `known`; the call is held up to `wait_seconds` for a change."""
        wait = min(wait_seconds, self._max_poll_wait)
        data = await self._call(
            POLL_SPECS,
            {"known": [k.to_wire() for k in known], "wait": wait},
            request_timeout=wait + self._timeout,
        )
        return [AssignedNodeSpec.model_validate(item) for item in data["executorSpecs"]]

    async def confirm_teardown(self, node_id: UUID) -> bool:
        """Tell the control plane a deleted node is torn down."""
        data = await self._call(CONFIRM_TEARDOWN, {"id": str(node_id)})
        return bool(data["confirmNodeTeardown"])

    async def report_events(self, events: Sequence[RuntimeEvent]) -> int:
        """Send runtime events (crashes, init failures, sync errors)."""
        data = await self._call(REPORT_RUNTIME_EVENTS, {"events": [e.to_wire() for e in events]})
        return int(data["reportRuntimeEvents"])

    async def poll_log_sessions(
        self, known: Sequence[UUID], wait_seconds: float
    ) -> list[LogSessionRequest]:
        """The live-log sessions to serve; held up to `wait_seconds` while they equal `known`."""
        wait = min(wait_seconds, self._max_poll_wait)
        data = await self._call(
            POLL_LOG_SESSIONS,
            {"known": [str(k) for k in known], "wait": wait},
            request_timeout=wait + self._timeout,
        )
        return [LogSessionRequest.model_validate(item) for item in data["executorLogSessions"]]

    async def post_log_chunk(self, chunk: LogChunk) -> bool:
        """Lines of a live-log session; False when the session is no longer open."""
        data = await self._call(POST_LOG_CHUNK, {"chunk": chunk.to_wire()})
        return bool(data["postLogChunk"])
