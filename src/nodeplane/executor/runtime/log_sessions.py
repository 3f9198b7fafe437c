"""Serving live-log sessions (issue 10): learn of them on a long-poll of their own, tail each
process's output, post the lines back.

The control plane never reaches into the executor's network: like specs, sessions are pulled.
`executorLogSessions` answers at once when the sessions differ from the ones this executor
serves, else holds until they change, so a session that opens is served at once and one whose
viewer left is stopped at once (at the latest one poll period later). This loop is apart from
the spec long-poll, which stays as it was.

Each session is a task: the last `tail` lines at or above the session's level, then (with
`follow`) new lines as they are written, batched every FLUSH_SECONDS into chunks under the
protocol's bounds and limited to MAX_LINES_PER_SECOND (the rest counted as dropped and reported
with the next chunk). A session ends when the control plane says it is no longer open (the
post answers false), when the poll no longer lists it, or when its source fails (the viewer is
told why).
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from uuid import UUID

import structlog

from nodeplane.chains.log_levels import level_parser
from nodeplane.executor.controlplane_client import ControlPlaneClient
from nodeplane.executor.runtime.backend import Backend, LogsUnavailable
from nodeplane.executor.runtime.log_tail import LevelFilter, LogFileTail
from nodeplane.executor.runtime.reachability import JitteredBackoff
from nodeplane.protocol import AssignedNodeSpec
from nodeplane.protocol.logs import (
    LOG_SOURCE_FAILED_CODE,
    LOGS_UNAVAILABLE_CODE,
    MAX_CHUNK_BYTES,
    MAX_CHUNK_LINES,
    MAX_LINES_PER_SECOND,
    LogChunk,
    LogLine,
    LogSessionRequest,
)
from nodeplane.protocol.text import storable_excerpt

log = structlog.get_logger(__name__)

# How often a followed file is looked at, and lines gathered since are sent.
FLUSH_SECONDS = 0.2
# Consecutive failed posts after which a session is given up (the viewer's stream then ends
# with executor_not_answering or the viewer reconnects).
MAX_FAILED_POSTS = 5
READS_PER_FLUSH = 8


class SessionGone(Exception):
    """The control plane no longer has this session open."""


def chunks_of(lines: list[LogLine]) -> list[list[LogLine]]:
    """`lines` in order, cut into chunks within MAX_CHUNK_LINES and MAX_CHUNK_BYTES."""
    chunks: list[list[LogLine]] = []
    current: list[LogLine] = []
    size = 0
    for line in lines:
        # Each line's JSON as the control plane passes it on, with room for the level.
        line_size = len(json.dumps(line.text, ensure_ascii=False).encode()) + 16
        if current and (len(current) >= MAX_CHUNK_LINES or size + line_size > MAX_CHUNK_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += line_size
    if current:
        chunks.append(current)
    return chunks


class ChunkSender:
    """Posts one session's lines: rate-limited, batched, each run of dropped lines reported
    where it happened (a chunk's `dropped` counts lines left out just before its lines)."""

    def __init__(
        self, client: ControlPlaneClient, session_id: UUID, per_second: float = MAX_LINES_PER_SECOND
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.per_second = per_second
        self._tokens = per_second
        self._at = time.monotonic()
        # Runs of lines to send, each with the count of lines dropped before it.
        self._runs: list[tuple[int, list[LogLine]]] = []
        self._gap = 0  # lines dropped since the last one queued
        self._failures = 0

    def add_tail(self, lines: Iterable[LogLine]) -> None:
        """Queue the initial tail (bounded by the protocol's MAX_LOG_TAIL, not rate-limited)."""
        self._queue(list(lines))

    def add(self, lines: Iterable[LogLine]) -> None:
        """Queue lines to send, as many as the rate allows; count the rest as dropped."""
        now = time.monotonic()
        self._tokens = min(self.per_second, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        for line in lines:
            if self._tokens >= 1:
                self._tokens -= 1
                self._queue([line])
            else:
                self._gap += 1

    def _queue(self, lines: list[LogLine]) -> None:
        if not lines:
            return
        if self._gap or not self._runs:
            self._runs.append((self._gap, []))
            self._gap = 0
        self._runs[-1][1].extend(lines)

    async def flush(self, *, force: bool = False, done: bool = False) -> None:
        """Post what is queued (with `force`, post even nothing: the session's first answer).
        Raises SessionGone when the control plane no longer has the session."""
        runs, self._runs = self._runs, []
        if self._gap:  # drops after the last line queued: said now, not with a later line
            runs.append((self._gap, []))
            self._gap = 0
        chunks: list[tuple[int, list[LogLine]]] = []
        for dropped, lines in runs:
            batches = chunks_of(lines) or [[]]
            chunks += [(dropped if i == 0 else 0, batch) for i, batch in enumerate(batches)]
        if not chunks and (force or done):
            chunks = [(0, [])]
        for i, (dropped, batch) in enumerate(chunks):
            chunk = LogChunk(
                session_id=self.session_id,
                lines=batch,
                dropped=dropped,
                done=done and i == len(chunks) - 1,
            )
            await self._post(chunk)

    async def fail(self, code: str, message: str) -> None:
        """Tell the viewer the session cannot be served; it ends."""
        chunk = LogChunk(
            session_id=self.session_id,
            error_code=code,
            error=storable_excerpt(message, 1000),
        )
        with contextlib.suppress(Exception):
            await self.client.post_log_chunk(chunk)

    async def _post(self, chunk: LogChunk) -> None:
        try:
            still_open = await self.client.post_log_chunk(chunk)
        except Exception as exc:  # lines lost in an outage are reported as dropped
            self._failures += 1
            self._gap += chunk.dropped + len(chunk.lines)
            log.debug("logs.post_failed", session_id=str(self.session_id), error=str(exc))
            if self._failures >= MAX_FAILED_POSTS:
                raise SessionGone from exc
            return
        self._failures = 0
        if not still_open:
            raise SessionGone


class LogSessions:
    """The live-log sessions this executor serves, and the poll that tells which."""

    def __init__(
        self,
        client: ControlPlaneClient,
        backend: Backend,
        held_node: Callable[[UUID], AssignedNodeSpec | None],
        *,
        poll_wait: float = 25.0,
        retry: float = 2.0,
        retry_cap: float = 60.0,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.client = client
        self.backend = backend
        self.held_node = held_node
        self.poll_wait = poll_wait
        self.paused = paused
        self._backoff = JitteredBackoff(base=retry, cap=retry_cap)
        self.tasks: dict[UUID, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Poll for sessions and keep one task per open session, until cancelled."""
        try:
            while True:
                if self.paused():
                    # Another instance of this executor is live: it serves the sessions.
                    self.update([])
                    await asyncio.sleep(self._backoff.base)
                    continue
                try:
                    sessions = await self.client.poll_log_sessions(list(self.tasks), self.poll_wait)
                except Exception as exc:  # an outage, or a control plane without live logs
                    log.debug("logs.poll_failed", error=str(exc))
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                self._backoff.reset()
                self.update(sessions)
        finally:
            self.update([])

    def update(self, sessions: list[LogSessionRequest]) -> None:
        """Start a task for each new session, cancel those of sessions no longer open."""
        wanted = {s.session_id: s for s in sessions}
        for session_id, task in list(self.tasks.items()):
            if session_id not in wanted or task.done():
                if not task.done():
                    log.info("logs.session_stopped", session_id=str(session_id))
                task.cancel()
                # A done task that is still listed was served to its end: not again.
                if session_id not in wanted:
                    del self.tasks[session_id]
        for session_id, request in wanted.items():
            if session_id not in self.tasks:
                log.info(
                    "logs.session_started",
                    session_id=str(session_id),
                    node_id=str(request.node_id),
                    role=request.role,
                    min_level=request.level.value,
                )
                self.tasks[session_id] = asyncio.create_task(
                    self.serve(request), name=f"logs-{session_id}"
                )

    @property
    def serving(self) -> set[UUID]:
        """The sessions whose tailing is under way."""
        return {sid for sid, task in self.tasks.items() if not task.done()}

    async def serve(self, request: LogSessionRequest) -> None:
        """Serve one session to its end; never raises (a failure is the viewer's to read)."""
        sender = ChunkSender(self.client, request.session_id)
        try:
            tail = self._source(request)
            lines = await asyncio.to_thread(tail.initial, request.tail)
            sender.add_tail(lines)
            await sender.flush(force=True, done=not request.follow)
            if not request.follow:
                return
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                # A file growing faster than it is sent is read a bounded amount per round;
                # the rate limit drops (and counts) what cannot go.
                for _ in range(READS_PER_FLUSH):
                    new, more = await asyncio.to_thread(tail.read_new)
                    sender.add(new)
                    if not more:
                        break
                await sender.flush()
        except SessionGone:
            return
        except LogsUnavailable as exc:
            await sender.fail(LOGS_UNAVAILABLE_CODE, str(exc))
        except (ValueError, OSError) as exc:
            log.warning("logs.source_failed", session_id=str(request.session_id), error=str(exc))
            await sender.fail(LOG_SOURCE_FAILED_CODE, f"cannot read the log: {exc}")

    def _source(self, request: LogSessionRequest) -> LogFileTail:
        node = self.held_node(request.node_id)
        if node is None or node.spec is None or node.deleted:
            raise ValueError("this executor does not hold that node")
        client = node.spec.clients.get(request.role)
        if client is None:
            raise ValueError(f"node {node.name} has no role {request.role!r}")
        path = self.backend.log_file(node, request.role)
        return LogFileTail(path, LevelFilter(level_parser(client.name), request.level))
