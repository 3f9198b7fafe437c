"""Live-log sessions and their lines, between control-plane processes; nothing is stored.

A viewer (a browser's or the CLI's stream) opens a session on the process it reached; the
executor that owns the node may poll for its sessions, and post their lines, on any other
process. So every process keeps a registry of every open session, kept in step by messages on
one PostgreSQL channel (LISTEN/NOTIFY, payloads under 8,000 bytes; on SQLite, one process, the
messages stay in-process):

- `o` announces a session (its node, executor, role, tail, level). The viewer's process sends
  it on open and again every ANNOUNCE_SECONDS; a session not announced for SESSION_TTL_SECONDS
  is dropped everywhere (its viewer's process died). A process that starts, or whose LISTEN
  reconnects, has missed announcements: it answers executors' polls only once it has heard a
  full round (`warm`), so a poll never tells an executor to stop a session that is open.
- `c` closes a session (its last viewer left): every process forgets it at once and wakes the
  owning executor's held poll, so the executor stops tailing at once.
- `k` carries lines of a session to the process holding its viewer, split so each message fits.
  Lines take this path even when the viewer is on the process the executor posted to: an
  executor's posts may reach different processes, and only one ordered channel (NOTIFYs are
  delivered in commit order) keeps its lines in the order it sent them. While this process's
  LISTEN is down, lines for its own viewers are handed over directly rather than lost.

Everything is bounded: sessions per node (MAX_LOG_VIEWERS_PER_NODE, checked by the service),
lines per message, lines per second per session (past it lines are counted as dropped and the
viewer is told how many), and each viewer's backlog.
"""

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog

from nodeplane.controlplane.store.notify import ChangeNotifier
from nodeplane.protocol.logs import (
    MAX_LINES_PER_SECOND,
    MAX_LOG_TAIL,
    LogChunk,
    LogLevel,
    LogSessionRequest,
)

log = structlog.get_logger(__name__)

ANNOUNCE_SECONDS = 5.0
SESSION_TTL_SECONDS = 3 * ANNOUNCE_SECONDS
# How long a process listens before its registry holds every open session.
WARM_AFTER_SECONDS = ANNOUNCE_SECONDS + 1.0
# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
MAX_PAYLOAD_BYTES = 7800
# One line's text in a message at most (a line of 2,000 four-byte characters would not fit).
MAX_LINE_BYTES = 6000
# Events a viewer may have waiting; past it the oldest lines are dropped and counted.
MAX_VIEWER_BACKLOG = 512
# The relay's own bound on lines per second per session, above the executor's (which drops
# first and says so): a buggy or hostile executor cannot flood a viewer.
RELAY_LINES_PER_SECOND = 2 * MAX_LINES_PER_SECOND
# A viewer whose stream has not looked at it for this long is closed (see LogViewer.touch).
ABANDONED_SECONDS = 45.0


@dataclass
class OpenSession:
    """A session as every process knows it."""

    request: LogSessionRequest
    organization_id: UUID
    executor_id: UUID
    seen_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ViewerEvent:
    """What a viewer is sent: lines (`lines`, with `dropped` before them), or the end."""

    lines: tuple[tuple[str, str], ...] = ()
    dropped: int = 0
    done: bool = False
    error_code: str | None = None
    error: str | None = None


class _RateLimit:
    """A token bucket of lines per second, holding up to `burst` (the initial tail passes)."""

    def __init__(self, per_second: float, burst: float) -> None:
        self.per_second = per_second
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, wanted: int) -> int:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted


class LogViewer:
    """One viewer's end of a session on this process: the events waiting for its stream."""

    def __init__(self, session: OpenSession) -> None:
        self.session = session
        self.ready = asyncio.Event()
        self.answered = False  # the executor has posted something for this session
        self.ended = False
        self.touched_at = time.monotonic()
        self._events: deque[ViewerEvent] = deque()
        self._dropped = 0
        self._rate = _RateLimit(RELAY_LINES_PER_SECOND, MAX_LOG_TAIL + RELAY_LINES_PER_SECOND)

    @property
    def session_id(self) -> UUID:
        return self.session.request.session_id

    def touch(self) -> None:
        """The viewer's stream is alive (it calls this at least every heartbeat)."""
        self.touched_at = time.monotonic()

    def push(self, event: ViewerEvent) -> None:
        self.answered = True
        lines = event.lines
        if lines:
            granted = self._rate.take(len(lines))
            self._dropped += len(lines) - granted
            lines = lines[len(lines) - granted :] if granted else ()
        if len(self._events) >= MAX_VIEWER_BACKLOG:
            oldest = self._events.popleft()
            self._dropped += oldest.dropped + len(oldest.lines)
        dropped = event.dropped + self._dropped
        self._dropped = 0
        if lines or dropped or event.done or event.error_code:
            self._events.append(
                ViewerEvent(lines, dropped, event.done, event.error_code, event.error)
            )
            self.ready.set()

    def end(self, error_code: str | None = None, error: str | None = None) -> None:
        """End the stream (with why, if it failed)."""
        self._events.append(ViewerEvent(done=True, error_code=error_code, error=error))
        self.ended = True
        self.ready.set()

    def take(self) -> list[ViewerEvent]:
        events = list(self._events)
        self._events.clear()
        self.ready.clear()
        return events


def _encode_lines(lines: list[tuple[str, str]]) -> list[str]:
    encoded = []
    for level, text in lines:
        item = json.dumps([level, text], ensure_ascii=False, separators=(",", ":"))
        if len(item.encode()) > MAX_LINE_BYTES:
            cut = text.encode()[: MAX_LINE_BYTES - 64].decode("utf-8", "ignore")
            item = json.dumps([level, cut + " …[truncated]"], ensure_ascii=False)
        encoded.append(item)
    return encoded


def chunk_messages(origin: str, chunk: LogChunk) -> list[str]:
    """`chunk` as `k` messages of at most MAX_PAYLOAD_BYTES each: the count of dropped lines
    in the first (it counts lines before these), the end marks in the last."""
    head = f"{origin}|k|{chunk.session_id}|"
    lines = _encode_lines([(line.level.value, line.text) for line in chunk.lines])
    end: dict[str, Any] = {"done": chunk.done}
    if chunk.error_code:
        end |= {"code": chunk.error_code, "error": chunk.error or ""}
    end_text = json.dumps(end, ensure_ascii=False, separators=(",", ":"))
    budget = MAX_PAYLOAD_BYTES - len(head.encode()) - len(end_text.encode()) - 48
    groups: list[list[str]] = [[]]
    size = 0
    for item in lines:
        item_size = len(item.encode()) + 1
        if groups[-1] and size + item_size > budget:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item_size
    messages = []
    for i, group in enumerate(groups):
        dropped = chunk.dropped if i == 0 else 0
        body = '{"lines":[' + ",".join(group) + f'],"dropped":{dropped}'
        body += "," + end_text[1:] if i == len(groups) - 1 else "}"
        messages.append(head + body)
    return messages


def _parse_chunk(body: str) -> ViewerEvent | None:
    try:
        data = json.loads(body)
        lines = tuple(
            (str(level), str(text))
            for level, text in data.get("lines", [])
            if level in LogLevel._value2member_map_
        )
        return ViewerEvent(
            lines=lines,
            dropped=int(data.get("dropped", 0)),
            done=bool(data.get("done", False)),
            error_code=data.get("code"),
            error=data.get("error"),
        )
    except (ValueError, TypeError, AttributeError):
        return None


def _session_wire(s: OpenSession) -> str:
    return json.dumps(
        {"r": s.request.to_wire(), "o": str(s.organization_id), "e": str(s.executor_id)},
        separators=(",", ":"),
    )


class LogRelay:
    """This process's registry of open log sessions, its viewers, and the messages between
    processes. `send` NOTIFYs a payload to every process (None: one process, SQLite)."""

    def __init__(
        self, notifier: ChangeNotifier, send: Callable[[str], Awaitable[None]] | None
    ) -> None:
        self._send = send
        self._notifier = notifier
        self.origin = os.urandom(4).hex()
        self.sessions: dict[UUID, OpenSession] = {}
        self._viewers: dict[UUID, LogViewer] = {}
        self._waiters: dict[UUID, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # Single-process relays are warm from the start; others once they heard a full round.
        self._warm_at = 0.0 if send is None else float("inf")
        self._warmed = asyncio.Event()
        if send is None:
            self._warmed.set()
        self.closing = False
        notifier.on_logs(self._received)
        notifier.on_listening(self._listening)
        notifier.on_close(self.close)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start re-announcing this process's sessions and expiring silent ones."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="nodeplane-log-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close(self) -> None:
        """Shutting down: end every stream and every held poll now."""
        self.closing = True
        for viewer in list(self._viewers.values()):
            viewer.end()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    def _listening(self) -> None:
        # LISTEN (re)started: announcements may have been missed while it was down.
        self._warm_at = time.monotonic() + WARM_AFTER_SECONDS
        self._warmed.clear()
        for session in self.sessions.values():
            session.seen_at = time.monotonic()  # not expired for a silence we did not hear

    @property
    def warm(self) -> bool:
        return time.monotonic() >= self._warm_at

    async def wait_warm(self, at_most: float) -> bool:
        """Wait until this process knows every open session (at most `at_most` seconds)."""
        if self.warm:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(at_most, max(0.0, self._warm_at - time.monotonic()))):
                await self._warmed.wait()
        return self.warm

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._tick()
            except Exception as exc:  # a lost announcement is re-sent on the next tick
                log.warning("log_relay.tick_failed", error=str(exc)[:200])

    async def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._warm_at and not self._warmed.is_set():
            self._warmed.set()
            self._wake_all()
        for session_id, viewer in list(self._viewers.items()):
            if now - viewer.touched_at > ABANDONED_SECONDS:
                # Its stream never ran, died without closing it, or is stuck writing to a reader
                # that does not read: the session ends (and so does the stream, if it wakes).
                viewer.end()
                self.close_viewer(viewer)
                continue
            if now - viewer.session.seen_at >= ANNOUNCE_SECONDS:
                viewer.session.seen_at = now
                await self._publish(f"{self.origin}|o|{_session_wire(viewer.session)}")
            if session_id not in self.sessions:
                self.sessions[session_id] = viewer.session
        for session_id, session in list(self.sessions.items()):
            if session_id not in self._viewers and now - session.seen_at > SESSION_TTL_SECONDS:
                del self.sessions[session_id]
                self._wake(session.executor_id)

    # ---- viewers (this process) -----------------------------------------------------------

    async def open(self, session: OpenSession) -> LogViewer:
        """Open `session` for a viewer here; every process (and the executor's poll) hears."""
        viewer = LogViewer(session)
        if self.closing:
            viewer.end()
            return viewer
        session_id = session.request.session_id
        self._viewers[session_id] = viewer
        self.sessions[session_id] = session
        self._wake(session.executor_id)
        self.start()
        await self._publish(f"{self.origin}|o|{_session_wire(session)}")
        return viewer

    def close_viewer(self, viewer: LogViewer) -> None:
        """The viewer left: the session ends everywhere and its executor's poll wakes.

        Not a coroutine: it runs where the stream was cancelled (the reader went away), where
        an await would be cancelled too; the message to the other processes is sent from a
        task of its own."""
        session_id = viewer.session_id
        if self._viewers.pop(session_id, None) is None:
            return
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._wake(session.executor_id)
        if self._send is not None:
            task = asyncio.get_running_loop().create_task(
                self._publish_quietly(f"{self.origin}|c|{session_id}")
            )
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _publish_quietly(self, payload: str) -> None:
        try:
            await self._publish(payload)
        except Exception as exc:  # the others expire the session after SESSION_TTL_SECONDS
            log.warning("log_relay.close_failed", error=str(exc)[:200])

    def sessions_of_node(self, node_id: UUID) -> int:
        """How many sessions are open on `node_id`, on any process."""
        return sum(1 for s in self.sessions.values() if s.request.node_id == node_id)

    # ---- executors ------------------------------------------------------------------------

    def sessions_of(self, executor_id: UUID) -> list[LogSessionRequest]:
        """The open sessions the executor should serve, oldest first."""
        return [s.request for s in self.sessions.values() if s.executor_id == executor_id]

    def subscribe(self, executor_id: UUID) -> asyncio.Event:
        """A waiter set when the executor's sessions change (or the server closes)."""
        waiter = asyncio.Event()
        if self.closing:
            waiter.set()
        self._waiters.setdefault(executor_id, set()).add(waiter)
        return waiter

    def unsubscribe(self, executor_id: UUID, waiter: asyncio.Event) -> None:
        waiters = self._waiters.get(executor_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[executor_id]

    async def deliver(self, executor_id: UUID, chunk: LogChunk) -> bool:
        """Pass the executor's lines to the session's viewer, wherever it is; False when no
        such session of this executor is open (ended, or never its own)."""
        session = self.sessions.get(chunk.session_id)
        if session is None and not self.warm:
            await self.wait_warm(WARM_AFTER_SECONDS)
            session = self.sessions.get(chunk.session_id)
        if session is None or session.executor_id != executor_id:
            return False
        viewer = self._viewers.get(chunk.session_id)
        if viewer is not None and (self._send is None or not self._notifier.connected):
            viewer.push(
                ViewerEvent(
                    lines=tuple((line.level.value, line.text) for line in chunk.lines),
                    dropped=chunk.dropped,
                    done=chunk.done,
                    error_code=chunk.error_code,
                    error=chunk.error,
                )
            )
            return True
        for message in chunk_messages(self.origin, chunk):
            await self._publish(message)
        return True

    # ---- messages -------------------------------------------------------------------------

    async def _publish(self, payload: str) -> None:
        if self._send is not None:
            await self._send(payload)

    def _received(self, payload: str) -> None:
        """A message from any process. This one's own come back too: its lines are taken (they
        reach its viewers this way, in order), its announcements and closes skipped."""
        try:
            origin, kind, rest = payload.split("|", 2)
            if origin == self.origin and kind != "k":
                return
            if kind == "o":
                data: dict[str, Any] = json.loads(rest)
                request = LogSessionRequest.model_validate(data["r"])
                known = self.sessions.get(request.session_id)
                if known is not None:
                    known.seen_at = time.monotonic()
                    return
                self.sessions[request.session_id] = OpenSession(
                    request, UUID(data["o"]), UUID(data["e"])
                )
                self._wake(UUID(data["e"]))
            elif kind == "c":
                session = self.sessions.pop(UUID(rest), None)
                if session is not None:
                    self._wake(session.executor_id)
            elif kind == "k":
                session_id, body = rest.split("|", 1)
                viewer = self._viewers.get(UUID(session_id))
                event = _parse_chunk(body) if viewer is not None else None
                if viewer is not None and event is not None:
                    viewer.push(event)
        except Exception as exc:  # a malformed message must not end LISTEN for everything
            log.warning("log_relay.bad_message", error=str(exc)[:200])

    def _wake(self, executor_id: UUID) -> None:
        for waiter in self._waiters.get(executor_id, ()):
            waiter.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()
