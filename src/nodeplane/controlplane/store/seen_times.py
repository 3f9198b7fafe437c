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

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Table, Update, and_, bindparam, column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from nodeplane.controlplane.store.json_rows import json_rows, json_rows_value
from nodeplane.controlplane.store.models import ApiKey, Executor, Node

_EXECUTORS = cast(Table, Executor.__table__)
_NODES = cast(Table, Node.__table__)
_KEYS = cast(Table, ApiKey.__table__)

# Rows per VALUES list (PostgreSQL takes at most 65,535 bound values per statement).
CHUNK = 2000
# Rows per transaction of a flush. A row the flush writes stays locked until its transaction
# commits: at 400 syncs/s a flush writes about 4,000 nodes' times, and in one transaction it
# held a fifth of the fleet's rows for its whole length (160-560 ms under that load), so a
# lifecycle action on one of them waited for it (docs/benchmarks.md, the morning of
# 2026-12-07). In parts, a row is held for its own part's UPDATE and COMMIT.
PART = 500


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

    def parts(self, size: int | None = None) -> Iterator["PendingTimes"]:
        """These times in parts of at most `size` rows (PART by default), each of one kind
        (executors, then nodes, then keys), to be written in a transaction each."""
        size = size or PART
        executors, nodes, keys = (
            list(self.executors.items()),
            list(self.nodes.items()),
            list(self.keys.items()),
        )
        for start in range(0, len(executors), size):
            yield PendingTimes(executors=dict(executors[start : start + size]))
        for start in range(0, len(nodes), size):
            yield PendingTimes(nodes=dict(nodes[start : start + size]))
        for start in range(0, len(keys), size):
            yield PendingTimes(keys=dict(keys[start : start + size]))

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
    it did (the same live instance, the same executor)."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    await _move_times(
        session,
        _EXECUTORS,
        ("id", "instance_id"),
        ("last_sync_at", "instance_seen_at"),
        [(eid, inst, at) for eid, (inst, at) in taken.executors.items()],
        postgresql,
    )
    await _move_times(
        session,
        _NODES,
        ("id", "executor_id"),
        ("observed_at",),
        [(nid, eid, at) for nid, (eid, at) in taken.nodes.items()],
        postgresql,
    )
    await _move_times(
        session,
        _KEYS,
        ("id",),
        ("last_used_at",),
        [(kid, at) for kid, at in taken.keys.items()],
        postgresql,
    )


async def _move_times(
    session: AsyncSession,
    table: Table,
    match: tuple[str, ...],
    times: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
    postgresql: bool,
) -> None:
    """UPDATE `table` SET each of `times` to a row's time, where the `match` columns equal the
    row's leading values and the first of `times` is older. On PostgreSQL one UPDATE per chunk
    joined to the chunk's rows, sent as one JSON text; SQLite's statements are in-process
    calls, so there one statement runs per row (executemany)."""
    if not rows:
        return
    c = table.c
    moved = c[times[0]]
    if not postgresql:
        at: BindParameter[Any] = bindparam("b_at")
        await session.execute(
            update(table)
            .where(*(c[name] == bindparam(f"b_{name}") for name in match))
            .where(or_(moved.is_(None), moved < at))
            .values({name: at for name in times}),
            [
                {**{f"b_{name}": v for name, v in zip(match, row, strict=False)}, "b_at": row[-1]}
                for row in rows
            ],
        )
        return
    statement = _postgresql_move(table, match, times)
    # A flush carries every node reported in the last second (4,000 at 400 syncs/s), encoded on
    # the event loop: ids as their 32 hex digits (PostgreSQL's uuid input takes them), and each
    # sync's one time formatted once for its nodes (4,000 rows: 9.5 ms, against 18 with str()
    # and a format per row).
    formatted: dict[datetime, str] = {}

    def iso(at: datetime) -> str:
        text = formatted.get(at)
        if text is None:
            text = formatted[at] = at.isoformat()
        return text

    for chunk in _chunks(rows):
        # One statement for every flush (store/json_rows.py), the rows in one JSON parameter.
        seen = (
            {**{name: v.hex for name, v in zip(match, row, strict=False)}, "at": iso(row[-1])}
            for row in chunk
        )
        await session.execute(statement, {"seen": json_rows_value(seen)})


@functools.cache
def _postgresql_move(table: Table, match: tuple[str, ...], times: tuple[str, ...]) -> Update:
    """The flush's UPDATE of `table`, which passes over rows another transaction holds.

    A row locked elsewhere is being written by a request (a sync storing what changed, which
    writes these times itself, or a rebind or revocation): waiting for it held every row this
    flush had already updated, and the requests that wanted those waited in turn. Under a fleet
    whose syncs write (a start, metric values moving), requests queued behind flushes behind
    requests for seconds, and two processes' flushes could deadlock. A time passed over is one
    heartbeat's: the next heartbeat records it again.
    """
    c = table.c
    moved = c[times[0]]
    seen = json_rows(
        "seen", *(column(name, c[name].type) for name in match), column("at", moved.type)
    )
    free = (
        select(c.id)
        .join(seen, and_(*(c[name] == seen.c[name] for name in match)))
        .where(or_(moved.is_(None), moved < seen.c.at))
        .with_for_update(of=table, skip_locked=True)
    )
    return (
        update(table)
        .where(*(c[name] == seen.c[name] for name in match))
        .where(or_(moved.is_(None), moved < seen.c.at))
        .where(c.id.in_(free.scalar_subquery()))
        .values({name: seen.c.at for name in times})
    )
