"""Syncs whose observations moved in metric values alone, stored together (group commit).

An executor sends new metric values for every node it runs once per metrics interval (height,
peers, disk, CPU), and its host's free disk with them: at a 30 s interval and a 5 s heartbeat,
one sync in six. Stored one sync per transaction, each cost seven round trips (the executor's
claim, the nodes' lock, the values, the alert rules' reads, NOTIFY and COMMIT) and was most of
a fleet's sync work on the server (docs/benchmarks.md). Here the syncs that arrive while such
a transaction runs wait for the next one, and each transaction stores all that waited in the
same few set-based statements: under load one transaction carries dozens of syncs, on an idle
server it carries one.

Nothing is answered before its transaction commits, so no guarantee of the write path changes:
an answered sync's values are stored, and an executor, which waits for its answer before its
next sync, cannot have two of its syncs applied out of order. The executor's times are written
behind, as a steady sync's are (store/seen_times.py). A sync is taken here only where the
transaction decides it exactly; any other is handed back (None) to the write path
(services/executors.py `sync`), which decides every sync: an executor whose row says other
than the sync (another live instance, disconnected, another version, new capabilities), a
node that is not the executor's, whose revision the observation is ahead of, whose
observation differs in more than metric values or is named twice, or a row another
transaction holds (on PostgreSQL the rows are locked SKIP LOCKED, so that one held row never
makes a whole batch wait).
"""

import asyncio
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import structlog
from sqlalchemy import Table, Update, bindparam, column, select, update

from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.metrics.instruments import moved_sync_batches, syncs
from nodeplane.controlplane.services.executors import (
    STEADY_EXECUTOR_COLUMNS,
    SyncResult,
    executor_of,
    keep_look,
    same_identity,
)
from nodeplane.controlplane.services.loop_turns import in_steps
from nodeplane.controlplane.services.metric_values import (
    only_metric_values_moved,
    store_and_judge,
)
from nodeplane.controlplane.services.node_facts import NODE_FACTS_COLUMNS, NodeFacts, node_facts
from nodeplane.controlplane.store.database import Database, UnitOfWork
from nodeplane.controlplane.store.json_rows import json_rows, json_rows_value
from nodeplane.controlplane.store.models import Executor, Node
from nodeplane.controlplane.store.sync_looks import OwnChanges
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import ObservedNodeState, SyncExecutorRequest

log = structlog.get_logger(__name__)

# Nodes per transaction: every row a batch stores stays locked until it commits, so a lifecycle
# action on one of them waits for the whole batch (as for the heard-from flush, seen_times.PART).
MAX_NODES = 500

_EXECUTORS = cast(Table, Executor.__table__)
_NODES = cast(Table, Node.__table__)
# SQLite's executors' rows, compared in Python. SQLite has no row locks: its writers take turns
# (Database.write).
_READ_EXECUTORS = select(_EXECUTORS).where(
    _EXECUTORS.c.id.in_(bindparam("executor_ids", expanding=True))
)
# In id order, as every writer of nodes locks them.
_LOCK_NODES = (
    select(*NODE_FACTS_COLUMNS)
    .where(_NODES.c.id.in_(bindparam("node_ids", expanding=True)))
    .order_by(_NODES.c.id)
    .with_for_update(skip_locked=True)
)


def _claim_statement_postgresql() -> Update:
    """The executors whose row says what their sync says of them, with the host resources the
    sync brings written: one statement for a batch (store/json_rows.py), and no executor's
    stored documents sent back only to be compared.

    The rows are locked as an UPDATE locks them until the batch commits, so an instance taking
    over an executor (which updates its row) is ordered with the batch. Rows another
    transaction holds (a sync writing its executor, a part of the heard-from flush, a
    takeover), here and in the nodes' lock, are passed over: their syncs take the write path,
    which waits for them. A batch never waits on a lock, so it can take part in no deadlock
    however many rows it holds."""
    c = _EXECUTORS.c
    compared = ("instance_id", "name", "kind", "version", "capabilities")
    sent = json_rows(
        "sent", *(column(name, c[name].type) for name in ("id", *compared, "resources"))
    )
    free = (
        select(c.id)
        .join(sent, c.id == sent.c.id)
        .with_for_update(of=_EXECUTORS, key_share=True, skip_locked=True)
    )
    return (
        update(_EXECUTORS)
        .where(
            c.id == sent.c.id,
            c.id.in_(free.scalar_subquery()),
            c.connected.is_(True),
            *(c[name] == sent.c[name] for name in compared),
        )
        .values(resources=sent.c.resources)
        .returning(*STEADY_EXECUTOR_COLUMNS)
    )


_CLAIM_POSTGRESQL = _claim_statement_postgresql()
# SQLite's statements are in-process calls: one per row.
_RESOURCES_SQLITE = (
    update(_EXECUTORS)
    .where(_EXECUTORS.c.id == bindparam("b_id"))
    .values(resources=bindparam("b_resources", type_=_EXECUTORS.c.resources.type))
)


@dataclass
class _Sync:
    """One sync waiting for its batch."""

    executor_id: UUID
    request: SyncExecutorRequest
    capabilities: dict[str, object]
    resources: dict[str, object]
    fingerprint: Hashable
    # The change number before anything was read for it (store/sync_looks.py).
    since: int
    answer: "asyncio.Future[SyncResult | None]"


@dataclass(frozen=True)
class _Claimed:
    """An executor as the batch locked it, and the sync (its first in the batch) it matched."""

    sync: _Sync
    executor: Executor


@dataclass
class _Taken:
    """A sync the batch stores: its executor and its nodes' moved values."""

    sync: _Sync
    executor: Executor
    moved: list[tuple[NodeFacts, ObservedNodeState, dict[str, Any]]] = field(default_factory=list)


class MovedSyncs:
    """The process's queue of moved syncs and the task that stores them, a batch at a time."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[_Sync] = []
        self._storing: asyncio.Task[None] | None = None

    async def store(
        self, principal: Principal, request: SyncExecutorRequest, fingerprint: Hashable
    ) -> SyncResult | None:
        """Store the sync with the others waiting, if it is one whose metric values alone moved
        from what its executor's live instance last stored; None (nothing stored) otherwise, and
        the caller takes the write path. A stored sync leaves its look for its repeats, as a
        written one does (`executors.keep_look`), `fingerprint` being the request's."""
        executor_id = principal.executor_id
        if executor_id is None or request.instance_id is None or not request.nodes:
            return None
        ids = [obs.node_id for obs in request.nodes]
        if len(set(ids)) != len(ids) or len(ids) > MAX_NODES:
            return None
        answer: asyncio.Future[SyncResult | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(
            _Sync(
                executor_id,
                request,
                request.capabilities.to_wire(),
                request.resources.to_wire(),
                fingerprint,
                self._db.notifier.sync_looks.begin(),
                answer,
            )
        )
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store_waiting(), name="nodeplane-moved")
        # A cancelled caller leaves its sync to the batch: stored or not, its answer is unsent,
        # and the executor's next sync decides again.
        result = await asyncio.shield(answer)
        if result is not None:
            syncs.labels(outcome="moved").inc()
        return result

    async def _store_waiting(self) -> None:
        """Store batches until none waits."""
        while self._waiting:
            batch = self._next_batch()
            try:
                await self._store_batch(batch)
            except BaseException:
                # The write path decides them all, and reports what failed.
                waiting, self._waiting = self._waiting, []
                for sync in (*batch, *waiting):
                    if not sync.answer.done():
                        sync.answer.set_result(None)
                raise

    def _next_batch(self) -> list[_Sync]:
        """The waiting syncs, in arrival order, up to MAX_NODES nodes in all (at least one)."""
        count, taken = 0, 0
        for sync in self._waiting:
            count += len(sync.request.nodes)
            if taken and count > MAX_NODES:
                break
            taken += 1
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return batch

    async def _store_batch(self, batch: list[_Sync]) -> None:
        """One transaction for `batch`; every sync in it is answered once it ends: with what
        was stored, or None for the write path."""
        db = self._db
        now = utcnow()
        taken: list[_Taken] = []
        # The batch's changes are its own for every sync in it; with the earliest sync's
        # number, a change that came between two of their numbers counts against all of them.
        own = OwnChanges(min(sync.since for sync in batch))
        try:
            async with db.write(own) as uow:
                session = uow.session
                executors = await _claim_executors(uow, batch)
                node_ids = sorted({obs.node_id for s in batch for obs in s.request.nodes})
                facts = {
                    row.id: node_facts(row)
                    for row in await session.execute(_LOCK_NODES, {"node_ids": node_ids})
                }
                taken = await _decide_all(batch, executors, facts)
                moved = [values for t in taken for values in t.moved]
                if moved:
                    names = {t.executor.id: t.executor.name for t in taken}
                    await store_and_judge(session, moved, now, names)
                    for fact, _, _ in moved:
                        uow.nodes_changed(fact.organization_id, (fact.id,))
        except Exception as error:
            log.warning("moved_syncs.batch_failed", syncs=len(batch), error=str(error)[:200])
            taken = []
        moved_sync_batches.inc()
        async for t in in_steps(taken, lambda t: len(t.sync.request.nodes)):
            request = t.sync.request
            assert request.instance_id is not None  # as `store` requires
            # Report times of the nodes whose observation repeated (the moved ones have theirs).
            db.seen.executor_synced(
                t.executor.id, request.instance_id, (obs.node_id for obs in request.nodes), now
            )
            t.executor.last_sync_at = t.executor.instance_seen_at = now
            result = SyncResult(t.executor, same_instance=True)
            mine = OwnChanges(t.sync.since, own.numbers, own.tainted)
            keep_look(db, result, request, t.sync.fingerprint, t.sync.since, mine)
            if not t.sync.answer.done():
                t.sync.answer.set_result(result)
        for sync in batch:
            if not sync.answer.done():
                sync.answer.set_result(None)


async def _claim_executors(uow: UnitOfWork, batch: list[_Sync]) -> dict[UUID, _Claimed]:
    """The executors of `batch` whose row says what their first sync in it says (the live
    instance, connected, name, kind, version and capabilities), locked but for those held
    elsewhere, and that sync's host resources written, which what steady syncs read of them
    depends on (store/sync_looks.py)."""
    first: dict[UUID, _Sync] = {}
    for sync in batch:
        first.setdefault(sync.executor_id, sync)
    session = uow.session
    if session.get_bind().dialect.name == "postgresql":
        sent = (
            {
                "id": str(executor_id),
                "instance_id": str(sync.request.instance_id),
                "name": sync.request.name,
                "kind": sync.request.kind.value,
                "version": sync.request.version,
                "capabilities": sync.capabilities,
                "resources": sync.resources,
            }
            for executor_id, sync in first.items()
        )
        rows = list(await session.execute(_CLAIM_POSTGRESQL, {"sent": json_rows_value(sent)}))
    else:
        rows, resources = [], []
        for row in await session.execute(_READ_EXECUTORS, {"executor_ids": list(first)}):
            sync = first[row.id]
            if same_identity(row, sync.request) and row.capabilities == sync.capabilities:
                rows.append(row)
                if row.resources != sync.resources:
                    resources.append({"b_id": row.id, "b_resources": sync.resources})
        if resources:
            await session.execute(_RESOURCES_SQLITE, resources)
    claimed: dict[UUID, _Claimed] = {}
    for row in rows:
        sync = first[row.id]
        claimed[row.id] = _Claimed(sync, executor_of(row, sync.capabilities, sync.resources))
        uow.executor_changed(row.id)
    return claimed


async def _decide_all(
    batch: list[_Sync], executors: Mapping[UUID, _Claimed], facts: Mapping[UUID, NodeFacts]
) -> list[_Taken]:
    """`_decide` for each sync of `batch` in turn, in steps (services/loop_turns.py)."""
    taken: list[_Taken] = []
    nodes_taken: set[UUID] = set()
    async for sync in in_steps(batch, lambda s: len(s.request.nodes)):
        decided = _decide(sync, executors.get(sync.executor_id), facts, nodes_taken)
        if decided is not None:
            taken.append(decided)
    return taken


def _decide(
    sync: _Sync,
    claimed: _Claimed | None,
    facts: Mapping[UUID, NodeFacts],
    nodes_taken: set[UUID],
) -> _Taken | None:
    """What the batch stores of `sync` (its nodes' moved values), or None for the write path:
    anything but the executor's live instance repeating itself with metric values moved."""
    if claimed is None or claimed.sync is not sync:
        return None
    request = sync.request
    taken = _Taken(sync, claimed.executor)
    for obs in request.nodes:
        fact = facts.get(obs.node_id)
        if (
            fact is None  # gone, or held by another transaction
            or fact.executor_id != sync.executor_id
            or obs.observed.revision > fact.revision
            or obs.node_id in nodes_taken
        ):
            return None
        wire = obs.observed.to_wire()
        if wire == fact.observed:
            continue
        if not only_metric_values_moved(fact.observed, obs.observed):
            return None
        taken.moved.append((fact, obs.observed, wire))
    nodes_taken.update(obs.node_id for obs in request.nodes)
    return taken
