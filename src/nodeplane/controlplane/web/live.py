"""Live nodes pages: changed rows pushed to each open page as Server-Sent Events.

Re-rendering every open page on a timer cost ~200 CPU ms per page and refresh (a core for 50
pages of 1,000 nodes; docs/benchmarks.md). Instead, each committed change names the nodes it
touched (UnitOfWork.nodes_changed, delivered across replicas by the ChangeNotifier); this
process collects them per organization and, at most once per FLUSH_SECONDS, reads only those
rows (built as the nodes page builds its own), encodes each once and sends every open page the
rows that match its filter. Only the page knows which rows it shows, so it decides when to take
itself afresh: a row it does not show while it shows its whole list (a node entered its
filter; on one page of a longer list, such a row is another page's and is ignored), or a
`membership` event naming a node it shows (deleted, or left its filter). Every page of a list
gets the rows of the whole list: which page is open is not the stream's concern.
"""

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select

from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.services import executors as executor_service
from nodeplane.controlplane.services import nodes as node_service
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.models import Executor
from nodeplane.controlplane.web.pages import node_row

log = structlog.get_logger(__name__)

# A page sees a change at most this long after its commit, and one flush serves every change
# of the interval: under a fleet's steady trickle of observations the cost is per flush.
FLUSH_SECONDS = 1.0
# A comment line this often keeps proxies from closing an idle stream and notices a closed one.
HEARTBEAT_SECONDS = 15.0
# A page renders before its stream subscribes: changes this recent are sent to a new stream
# again, so one committed in between is not missed (a repeat only rewrites a row in place).
RECENT_SECONDS = 10.0
# A stream whose reader fell this many events behind gets one `membership` event instead: the
# page takes itself afresh rather than the server holding an unbounded backlog.
MAX_BACKLOG = 64
# Rows read per statement (bound parameters of an IN list).
READ_BATCH = 500

MEMBERSHIP_ALL = b'event: membership\ndata: {"all":true}\n\n'


@dataclass(frozen=True)
class RowFilter:
    """The nodes page's filter, applied to a built row (the page applies it in SQL)."""

    name: str | None = None
    chain: str | None = None
    phase: str | None = None  # a NodePhase name, as rows carry it
    executor_id: str | None = None
    # SQLite's LIKE ignores ASCII case, PostgreSQL's does not: match as the page's query does.
    name_ignores_case: bool = False

    def matches(self, row: dict[str, Any]) -> bool:
        if self.chain is not None and row["chain"] != self.chain:
            return False
        if self.phase is not None and row["phase"] != self.phase:
            return False
        if self.executor_id is not None and row["executorId"] != self.executor_id:
            return False
        if self.name:
            if self.name_ignores_case:
                return self.name.lower() in row["name"].lower()
            return self.name in row["name"]
        return True


class Subscription:
    """One open stream: what it shows and the events waiting to be sent to it."""

    def __init__(self, organization_id: UUID, row_filter: RowFilter) -> None:
        self.organization_id = organization_id
        self.filter = row_filter
        self.ready = asyncio.Event()
        self.closed = False
        self._chunks: list[bytes] = []

    def push(self, chunk: bytes) -> None:
        if len(self._chunks) >= MAX_BACKLOG:
            self._chunks = [MEMBERSHIP_ALL]
        else:
            self._chunks.append(chunk)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def take(self) -> bytes:
        chunks, self._chunks = self._chunks, []
        self.ready.clear()
        return b"".join(chunks)


def _event(name: str, encoded_items: Iterable[str], key: str) -> bytes:
    return f'event: {name}\ndata: {{"{key}":[{",".join(encoded_items)}]}}\n\n'.encode()


async def rows_by_id(
    db: Database, settings: Settings, organization_id: UUID, node_ids: Iterable[UUID]
) -> list[dict[str, Any]]:
    """The organization's nodes among `node_ids`, each as the nodes page's row."""
    async with db.read() as session:
        nodes = await node_service.node_listings(
            session, organization_id, node_ids, batch=READ_BATCH
        )
        executor_ids = list({n.executor_id for n in nodes})
        executors = (
            {
                e.id: e
                for e in await session.scalars(
                    select(Executor).where(
                        Executor.organization_id == organization_id,
                        Executor.id.in_(executor_ids),
                    )
                )
            }
            if executor_ids
            else {}
        )
    timeout = settings.heartbeat_timeout
    online = {e.id: executor_service.is_online(e, timeout) for e in executors.values()}
    return [
        node_row(n, executors.get(n.executor_id), online.get(n.executor_id, False)) for n in nodes
    ]


class LiveNodes:
    """This process's open nodes streams, per organization, and the nodes changed since the
    last flush."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._subscriptions: dict[UUID, set[Subscription]] = {}
        self._dirty: dict[UUID, set[UUID] | None] = {}  # None: every node of the organization
        self._recent: deque[tuple[float, UUID, frozenset[UUID] | None]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        db.notifier.on_nodes(self._changed)
        db.notifier.on_close(self.close)

    def _changed(self, organization_id: UUID | None, node_ids: frozenset[UUID] | None) -> None:
        if organization_id is None:
            for organization in self._subscriptions:
                self._dirty[organization] = None
        else:
            now = time.monotonic()
            self._recent.append((now, organization_id, node_ids))
            while self._recent and self._recent[0][0] < now - RECENT_SECONDS:
                self._recent.popleft()
            if organization_id in self._subscriptions:
                self._mark(organization_id, node_ids)
        self._wake.set()

    def _mark(self, organization_id: UUID, node_ids: frozenset[UUID] | None) -> None:
        if node_ids is None:
            self._dirty[organization_id] = None
            return
        dirty = self._dirty.setdefault(organization_id, set())
        if dirty is not None:
            dirty.update(node_ids)

    def subscribe(self, organization_id: UUID, row_filter: RowFilter) -> Subscription:
        """A new stream of the organization's rows through `row_filter`."""
        subscription = Subscription(organization_id, row_filter)
        if self.closing:
            subscription.close()
            return subscription
        self._subscriptions.setdefault(organization_id, set()).add(subscription)
        horizon = time.monotonic() - RECENT_SECONDS
        for at, organization, node_ids in self._recent:
            if organization == organization_id and at >= horizon:
                self._mark(organization_id, node_ids)
                self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="nodeplane-live-nodes")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.organization_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.organization_id]
                self._dirty.pop(subscription.organization_id, None)

    def close(self) -> None:
        """Shutting down: end every stream now and every later one at once."""
        self.closing = True
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.close()
        if self._task is not None:
            self._task.cancel()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_SECONDS)

    async def flush(self) -> None:
        """Send every open stream the changed rows it shows."""
        dirty, self._dirty = self._dirty, {}
        for organization_id, node_ids in dirty.items():
            subscriptions = list(self._subscriptions.get(organization_id, ()))
            if not subscriptions:
                continue
            if node_ids is None:
                # Changes this process may have missed (LISTEN reconnected) or too many to
                # name: rare, so each page simply takes itself afresh.
                for subscription in subscriptions:
                    subscription.push(MEMBERSHIP_ALL)
                continue
            try:
                rows = await rows_by_id(self.db, self.settings, organization_id, node_ids)
            except Exception:
                # These changes would be lost to the pages: each takes itself afresh instead.
                log.exception("live_nodes.read_failed")
                for subscription in subscriptions:
                    subscription.push(MEMBERSHIP_ALL)
                continue
            encoded = [(row, json.dumps(row, separators=(",", ":"))) for row in rows]
            found = {row["id"] for row in rows}
            missing = [json.dumps(str(i)) for i in node_ids if str(i) not in found]
            chunks: dict[RowFilter, bytes] = {}
            for subscription in subscriptions:
                chunk = chunks.get(subscription.filter)
                if chunk is None:
                    chunk = self._chunk(subscription.filter, encoded, missing)
                    chunks[subscription.filter] = chunk
                if chunk:
                    subscription.push(chunk)

    @staticmethod
    def _chunk(
        row_filter: RowFilter, encoded: list[tuple[dict[str, Any], str]], missing: list[str]
    ) -> bytes:
        shown = [text for row, text in encoded if row_filter.matches(row)]
        gone = missing + [
            json.dumps(row["id"]) for row, _ in encoded if not row_filter.matches(row)
        ]
        chunk = _event("rows", shown, "rows") if shown else b""
        if gone:
            chunk += _event("membership", gone, "ids")
        return chunk


async def stream_events(
    live: LiveNodes,
    subscription: Subscription,
    still_signed_in: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The bytes of one stream until the server shuts down, the reader goes away (Starlette
    cancels this) or the session ends (`still_signed_in`, checked at each heartbeat)."""
    try:
        # A reconnecting EventSource waits this long (ms) first.
        yield b"retry: 2000\n\n"
        while not subscription.closed:
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await subscription.ready.wait()
            except TimeoutError:
                if not await still_signed_in():
                    return
                yield b": heartbeat\n\n"
                continue
            chunk = subscription.take()
            if chunk:
                yield chunk
    finally:
        live.unsubscribe(subscription)
