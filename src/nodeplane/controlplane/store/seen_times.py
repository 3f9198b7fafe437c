"""Write-behind of "last heard from" times: executor heartbeats, node report times, key use.

An executor repeating what it reported last time changes no data, only times. Writing those
times in the request cost a transaction per heartbeat (two UPDATEs and a commit), the largest
part of a control plane's work under a steady fleet (docs/benchmarks.md). They are kept here and
written for every executor and node heard from in the last interval in a few set-based
statements, the way Nomad and Consul keep heartbeats off their write path.

What this may lose is bounded and harmless: if the process dies, at most one interval of times
(an executor then looks up to that much longer silent; its next heartbeat corrects it). What it
never holds is data: an observation that differs from the stored one, an instance claim, a
reconnect — those are written in the request, as before. Every write is conditional, so a time
written late never moves a value backwards nor touches a row that changed hands meanwhile.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Table, Uuid, bindparam, column, or_, update, values
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Values

from nodeplane.controlplane.store.models import ApiKey, Executor, Node
from nodeplane.controlplane.store.types import UTCDateTime

_EXECUTORS = cast(Table, Executor.__table__)
_NODES = cast(Table, Node.__table__)
_KEYS = cast(Table, ApiKey.__table__)

# Rows per VALUES list (PostgreSQL takes at most 65,535 bound values per statement).
CHUNK = 2000


@dataclass
class PendingTimes:
    """Times heard since the last flush, the latest per row."""

    # executor id -> (the live instance the time was heard from, when)
    executors: dict[UUID, tuple[UUID, datetime]] = field(default_factory=dict)
    # node id -> (its executor, when it was last reported)
    nodes: dict[UUID, tuple[UUID, datetime]] = field(default_factory=dict)
    # api key id -> when it was last used
    keys: dict[UUID, datetime] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.executors) + len(self.nodes) + len(self.keys)

    def merge(self, older: "PendingTimes") -> None:
        """Take back `older`'s entries (a flush that failed) where nothing newer is held."""
        for executor_id, (instance, at) in older.executors.items():
            held = self.executors.get(executor_id)
            if held is None or held[1] < at:
                self.executors[executor_id] = (instance, at)
        for node_id, (executor_id, at) in older.nodes.items():
            held_node = self.nodes.get(node_id)
            if held_node is None or held_node[1] < at:
                self.nodes[node_id] = (executor_id, at)
        for key_id, at in older.keys.items():
            if key_id not in self.keys or self.keys[key_id] < at:
                self.keys[key_id] = at


class SeenTimes:
    """The process's buffer of times heard; `Database` flushes it every second or so."""

    def __init__(self) -> None:
        self._pending = PendingTimes()

    def __len__(self) -> int:
        return len(self._pending)

    def executor_synced(
        self, executor_id: UUID, instance_id: UUID, node_ids: Iterable[UUID], at: datetime
    ) -> None:
        """The executor's live instance synced at `at`, reporting `node_ids` unchanged."""
        self._pending.executors[executor_id] = (instance_id, at)
        nodes = self._pending.nodes
        for node_id in node_ids:
            nodes[node_id] = (executor_id, at)

    def executor_seen(self, executor_id: UUID) -> tuple[UUID, datetime] | None:
        """The instance and time of the executor's latest heartbeat not yet written, if any."""
        return self._pending.executors.get(executor_id)

    def key_used(self, key_id: UUID, at: datetime) -> None:
        """An API key authenticated a request at `at` (lastUsedAt is advisory)."""
        self._pending.keys[key_id] = at

    def take(self) -> PendingTimes:
        """Everything held, and an empty buffer in its place."""
        taken, self._pending = self._pending, PendingTimes()
        return taken

    def put_back(self, taken: PendingTimes) -> None:
        """Return entries whose write failed, to be written with the next flush."""
        self._pending.merge(taken)


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


async def write_times(session: AsyncSession, taken: PendingTimes) -> None:
    """Write `taken`, each row only if the time moves it forward and the row still belongs where
    it did (the same live instance, the same executor). On PostgreSQL a few set-based UPDATEs
    joined to a VALUES list; SQLite cannot name a VALUES list's columns, and its statements are
    in-process calls, so there one statement runs per row (executemany)."""
    e, n, k = _EXECUTORS.c, _NODES.c, _KEYS.c
    postgresql = session.get_bind().dialect.name == "postgresql"
    executors = [(eid, inst, at) for eid, (inst, at) in taken.executors.items()]
    nodes = [(nid, eid, at) for nid, (eid, at) in taken.nodes.items()]
    keys = [(kid, at) for kid, at in taken.keys.items()]
    if not postgresql:
        if executors:
            await session.execute(
                update(_EXECUTORS)
                .where(
                    e.id == bindparam("b_id"),
                    e.instance_id == bindparam("b_other"),
                    or_(e.last_sync_at.is_(None), e.last_sync_at < bindparam("b_at")),
                )
                .values(last_sync_at=bindparam("b_at"), instance_seen_at=bindparam("b_at")),
                [{"b_id": i, "b_other": o, "b_at": at} for i, o, at in executors],
            )
        if nodes:
            await session.execute(
                update(_NODES)
                .where(
                    n.id == bindparam("b_id"),
                    n.executor_id == bindparam("b_other"),
                    or_(n.observed_at.is_(None), n.observed_at < bindparam("b_at")),
                )
                .values(observed_at=bindparam("b_at")),
                [{"b_id": i, "b_other": o, "b_at": at} for i, o, at in nodes],
            )
        if keys:
            await session.execute(
                update(_KEYS)
                .where(
                    k.id == bindparam("b_id"),
                    or_(k.last_used_at.is_(None), k.last_used_at < bindparam("b_at")),
                )
                .values(last_used_at=bindparam("b_at")),
                [{"b_id": i, "b_at": at} for i, at in keys],
            )
        return
    for chunk in _chunks(executors):
        v = _values(chunk, "instance")
        await session.execute(
            update(_EXECUTORS)
            .where(
                e.id == v.c.id,
                e.instance_id == v.c.instance,
                or_(e.last_sync_at.is_(None), e.last_sync_at < v.c.at),
            )
            .values(last_sync_at=v.c.at, instance_seen_at=v.c.at)
        )
    for chunk in _chunks(nodes):
        v = _values(chunk, "executor")
        await session.execute(
            update(_NODES)
            .where(
                n.id == v.c.id,
                n.executor_id == v.c.executor,
                or_(n.observed_at.is_(None), n.observed_at < v.c.at),
            )
            .values(observed_at=v.c.at)
        )
    for chunk in _chunks(keys):
        v = _values(chunk, None)
        await session.execute(
            update(_KEYS)
            .where(k.id == v.c.id, or_(k.last_used_at.is_(None), k.last_used_at < v.c.at))
            .values(last_used_at=v.c.at)
        )


def _values(rows: Sequence[tuple[Any, ...]], other: str | None) -> Values:
    """A VALUES list of (id, [other id,] time) rows."""
    columns = [column("id", Uuid), column("at", UTCDateTime)]
    if other is not None:
        columns.insert(1, column(other, Uuid))
    return values(*columns, name="seen").data(list(rows))
