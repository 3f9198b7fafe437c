"""Executors: heartbeat sync, spec long-poll, teardown confirmation, runtime events (DESIGN §4)."""

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Result,
    Row,
    Select,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    column,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from nodeplane.controlplane.auth.principal import (
    ApiKeyKind,
    Principal,
    require_executor,
    require_mutator,
    require_principal,
)
from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden
from nodeplane.controlplane.metrics.instruments import poll_looks, spec_polls_held, syncs
from nodeplane.controlplane.services import alerts
from nodeplane.controlplane.services.actors import SYSTEM, Actor, actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.services.metric_values import (
    only_metric_values_moved,
    store_and_judge,
)
from nodeplane.controlplane.services.node_facts import NODE_FACTS_COLUMNS, NodeFacts, node_facts
from nodeplane.controlplane.services.nodes import (
    auto_rollback,
    phase_of,
    record_phase_change,
)
from nodeplane.controlplane.store.database import Database, UnitOfWork, dialect_insert
from nodeplane.controlplane.store.json_rows import json_rows, json_rows_value
from nodeplane.controlplane.store.models import (
    ApiKey,
    Event,
    Executor,
    ExecutorInstanceRefusal,
    Node,
)
from nodeplane.controlplane.store.seen_times import SeenTimes
from nodeplane.controlplane.store.sync_looks import OwnChanges, SyncLook
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import (
    MAX_POLL_WAIT_SECONDS,
    AssignedNodeSpec,
    EventLevel,
    EventSource,
    KnownRevision,
    NodeSpec,
    ObservedNodeState,
    RuntimeEvent,
    SyncExecutorRequest,
)

MAX_RUNTIME_EVENTS_PER_CALL = 200


def is_online(executor: Executor, heartbeat_timeout: float, now: datetime | None = None) -> bool:
    """Online when the last sync is more recent than the heartbeat timeout."""
    return synced_within(executor.last_sync_at, heartbeat_timeout, now)


def synced_within(
    last_sync_at: datetime | None, heartbeat_timeout: float, now: datetime | None = None
) -> bool:
    """`is_online` of an executor whose last sync was at `last_sync_at`."""
    if last_sync_at is None:
        return False
    return (now or utcnow()) - last_sync_at < timedelta(seconds=heartbeat_timeout)


def _executor_actor(executor: Executor) -> Actor:
    return Actor("executor", executor.id, f"executor:{executor.name}")


# ---- reads ---------------------------------------------------------------------------------


async def list_executors(session: AsyncSession, principal: Principal | None) -> list[Executor]:
    """Executors of the caller's organization (an executor key sees only itself)."""
    p = require_principal(principal)
    if p.organization_id is None:
        return []
    query = select(Executor).where(Executor.organization_id == p.organization_id)
    if p.is_executor:
        query = query.where(Executor.id == p.executor_id)
    return list((await session.scalars(query.order_by(Executor.name))).all())


async def get_executor(
    session: AsyncSession, principal: Principal | None, executor_id: UUID
) -> Executor | None:
    """The executor if the caller may see it, else None."""
    p = require_principal(principal)
    if p.organization_id is None or (p.is_executor and p.executor_id != executor_id):
        return None
    executor: Executor | None = await session.scalar(
        select(Executor).where(
            Executor.id == executor_id, Executor.organization_id == p.organization_id
        )
    )
    return executor


def visible_to(principal: Principal, executor: Executor) -> bool:
    """Whether the caller may see the executor: one of its organization's, and for an executor
    key only its own."""
    return (
        principal.organization_id is not None
        and executor.organization_id == principal.organization_id
        and (not principal.is_executor or executor.id == principal.executor_id)
    )


async def get_executors(
    session: AsyncSession, principal: Principal | None, executor_ids: list[UUID]
) -> dict[UUID, Executor]:
    """The executors among `executor_ids` that the caller may see, by id."""
    p = require_principal(principal)
    if not executor_ids:
        return {}
    found = await session.scalars(select(Executor).where(Executor.id.in_(executor_ids)))
    return {e.id: e for e in found if visible_to(p, e)}


async def count_nodes_by_executor(
    session: AsyncSession, executor_ids: list[UUID]
) -> dict[UUID, int]:
    """How many nodes (including ones being deleted) each executor hosts; absent means none."""
    if not executor_ids:
        return {}
    rows = await session.execute(
        select(Node.executor_id, func.count())
        .where(Node.executor_id.in_(executor_ids))
        .group_by(Node.executor_id)
    )
    return {executor_id: count for executor_id, count in rows}


# ---- sync ----------------------------------------------------------------------------------


@dataclass
class SyncResult:
    """The executor after a sync, and observations that were not accepted (with why)."""

    executor: Executor
    rejected: dict[UUID, str] = field(default_factory=dict)
    # Written for the executor's recorded live instance, which synced again (`_steady_claim`).
    same_instance: bool = False


class BindRefused(DomainError):
    """A key not bound to any executor named an executor that belongs to another key."""

    def __init__(self, executor: Executor, api_key_id: UUID) -> None:
        super().__init__(
            ErrorCode.FORBIDDEN,
            f"executor {executor.name!r} is bound to another key; an owner or admin can bind "
            "this key to it (rebindExecutor) or create a key for it",
        )
        self.executor_id = executor.id
        self.executor_name = executor.name
        self.organization_id = executor.organization_id
        self.api_key_id = api_key_id


async def _bind_executor(uow: UnitOfWork, p: Principal, request: SyncExecutorRequest) -> Executor:
    session = uow.session
    assert p.organization_id is not None and p.api_key_id is not None
    if p.executor_id is not None:
        executor = await session.get(Executor, p.executor_id, with_for_update=True)
        assert executor is not None
        if executor.name != request.name:
            raise forbidden(f"this key belongs to executor {executor.name!r}")
        return executor
    executor = await session.scalar(
        select(Executor)
        .where(Executor.organization_id == p.organization_id, Executor.name == request.name)
        .with_for_update()
    )
    if executor is not None:
        # An executor is bound to the key that registered it: a new key takes it over only
        # when an admin says so, or an attacker with any executor key could become any host.
        raise BindRefused(executor, p.api_key_id)
    executor = Executor(
        organization_id=p.organization_id,
        name=request.name,
        kind=request.kind.value,
        version=request.version,
        connected=True,
    )
    session.add(executor)
    await session.flush()
    await record_event(
        session,
        organization_id=p.organization_id,
        type="executor.connected",
        message=f"executor {request.name} ({request.kind.value} {request.version}) connected",
        actor=_executor_actor(executor),
        executor_id=executor.id,
        payload={"kind": request.kind.value, "version": request.version},
    )
    await session.execute(
        update(ApiKey).where(ApiKey.id == p.api_key_id).values(executor_id=executor.id)
    )
    return executor


# A host retrying with a refused key every few seconds leaves one event per hour, not thousands.
BIND_REFUSED_EVENT_INTERVAL = timedelta(hours=1)


async def record_bind_refusal(uow: UnitOfWork, refused: BindRefused) -> None:
    """Record `executor.bind_refused` (warn) so admins see the attempt, at most once an hour
    per key and executor."""
    session = uow.session
    key = await session.get(ApiKey, refused.api_key_id)
    if key is None:
        return
    recent = await session.scalar(
        select(Event.id)
        .where(
            Event.organization_id == refused.organization_id,
            Event.type == "executor.bind_refused",
            Event.executor_id == refused.executor_id,
            Event.actor_id == key.id,
            Event.created_at > utcnow() - BIND_REFUSED_EVENT_INTERVAL,
        )
        .limit(1)
    )
    if recent is not None:
        return
    await record_event(
        session,
        organization_id=refused.organization_id,
        type="executor.bind_refused",
        level=EventLevel.WARN,
        message=f"key {key.name!r} tried to act as executor {refused.executor_name}, "
        "which is bound to another key; refused",
        actor=Actor("apikey", key.id, f"key:{key.name}"),
        executor_id=refused.executor_id,
        payload={"keyId": str(key.id), "keyName": key.name},
    )


async def sync(
    db: Database,
    principal: Principal | None,
    request: SyncExecutorRequest,
    heartbeat: Heartbeat,
    *,
    steady_first: bool = True,
    fingerprint: Hashable | None = None,
) -> SyncResult:
    """`sync_executor` in its own transaction, unless the sync repeats what is stored
    (`unchanged_sync`, asked first unless `steady_first` is False: the caller knows the sync
    differs from the executor's last); a refused takeover or a refused second instance is
    recorded in another. With a `fingerprint` (the request's bytes and what else decides it,
    as the caller sees them), a steady sync is kept for `kept_sync` to answer its repeats."""
    require_executor(principal)
    assert principal is not None
    looks = db.notifier.sync_looks
    since = looks.begin()
    if steady_first and (unchanged := await unchanged_sync(db, principal, request)):
        syncs.labels(outcome="steady").inc()
        if fingerprint is not None:
            keep_look(db, unchanged, request, fingerprint, since)
        return unchanged
    own = OwnChanges(since) if fingerprint is not None else None
    try:
        async with recording_refusals(db), db.write(own) as uow:
            written = await sync_executor(uow, principal, request, heartbeat, db.seen)
            repeatable = _repeat_is_steady(uow, request, written)
        syncs.labels(outcome="written").inc()
        if own is not None and fingerprint is not None and repeatable:
            # What it stored is what its repeat would read: no read is needed to keep the look.
            keep_look(db, written, request, fingerprint, since, own)
        return written
    except BindRefused as refused:
        async with db.write() as uow:
            await record_bind_refusal(uow, refused)
        raise


def _repeat_is_steady(uow: UnitOfWork, request: SyncExecutorRequest, written: SyncResult) -> bool:
    """Whether the same sync, sent again once `written` commits, would be steady
    (`unchanged_sync`) unless something else changes meanwhile: the executor's live instance
    synced, every observation was stored, none twice, and no spec moved (a rollback)."""
    ids = [obs.node_id for obs in request.nodes]
    return (
        written.same_instance
        and request.instance_id is not None
        and not written.rejected
        and not uow.wake_executors
        and len(set(ids)) == len(ids)
    )


def keep_look(
    db: Database,
    result: SyncResult,
    request: SyncExecutorRequest,
    fingerprint: Hashable,
    since: int,
    own: OwnChanges | None = None,
) -> None:
    """Keep what a steady sync read (or, with `own`, what a written one stored)."""
    executor = result.executor
    assert request.instance_id is not None  # as unchanged_sync and _repeat_is_steady require
    look = SyncLook(
        executor_id=executor.id,
        name=executor.name,
        organization_id=executor.organization_id,
        fingerprint=fingerprint,
        instance_id=request.instance_id,
        node_ids=tuple(obs.node_id for obs in request.nodes),
        since=since,
    )
    if own is None:
        db.notifier.sync_looks.keep(look)
    else:
        db.notifier.sync_looks.keep_written(look, own)


def kept_sync(db: Database, principal: Principal, fingerprint: Hashable) -> SyncLook | None:
    """A sync that repeats, byte for byte, a steady sync of the executor this process read,
    answered from that look when nothing it depends on has changed since (store/sync_looks.py):
    no validation, no read. Its times are written behind, as a steady sync's. None: the caller
    validates it and asks `sync`."""
    if principal.executor_id is None:
        return None
    look = db.notifier.sync_looks.recall(principal.executor_id, fingerprint)
    if look is None:
        return None
    db.seen.executor_synced(look.executor_id, look.instance_id, look.node_ids, utcnow())
    syncs.labels(outcome="kept").inc()
    return look


async def unchanged_sync(
    db: Database, p: Principal, request: SyncExecutorRequest
) -> SyncResult | None:
    """The steady state of a fleet, answered from one read: the executor's live instance syncs
    again and repeats, node for node, what is stored. Nothing but times changes, and those are
    written behind the request (store/seen_times.py). None when anything differs (another
    instance, a reconnect, new capabilities, a changed or refused observation): the caller then
    takes the write path, which decides everything as before.
    """
    if p.executor_id is None or request.instance_id is None:
        return None
    ids = [obs.node_id for obs in request.nodes]
    if len(set(ids)) != len(ids):
        return None
    said = _Said(request, request.capabilities.to_wire(), request.resources.to_wire())
    compare = _steady_row_compared_in_postgresql if db.is_postgresql else _steady_row_compared_here
    row = await compare(db, p.executor_id, said)
    if row is None:
        return None
    now = utcnow()
    db.seen.executor_synced(row.id, request.instance_id, ids, now)
    # Detached: the payload is built from it, nothing is written through it. What the sync
    # repeats equals what is stored, so its capabilities and resources stand for the stored ones.
    executor = executor_of(row, said.capabilities, said.resources)
    executor.last_sync_at = executor.instance_seen_at = now
    return SyncResult(executor)


_EXECUTORS = cast(Table, Executor.__table__)
_NODES = cast(Table, Node.__table__)
# The executor's columns a steady sync reads as they are; its JSON documents are only compared.
STEADY_EXECUTOR_COLUMNS = [c for c in _EXECUTORS.c if c.key not in ("capabilities", "resources")]


@dataclass(frozen=True)
class _Said:
    """A sync and its executor documents in wire form (computed once per sync)."""

    request: SyncExecutorRequest
    capabilities: dict[str, object]
    resources: dict[str, object]


def same_identity(row: Row[Any], request: SyncExecutorRequest) -> bool:
    """Whether the executor's row is what the sync says it is: its live instance, connected,
    with the same name, kind and version."""
    return bool(
        row.instance_id == request.instance_id
        and row.connected
        and row.name == request.name
        and row.kind == request.kind.value
        and row.version == request.version
    )


async def _steady_row_compared_here(
    db: Database, executor_id: UUID, said: _Said
) -> Row[Any] | None:
    """The executor's row if the sync repeats what is stored, comparing in Python (SQLite)."""
    request = said.request
    ids = [obs.node_id for obs in request.nodes]
    # The executor and the nodes it names in one statement: the steady sync is the request a
    # fleet sends most, and each round trip costs the server more CPU than the comparison.
    statement = select(_EXECUTORS, _NODES.c.id, _NODES.c.revision, _NODES.c.observed).where(
        _EXECUTORS.c.id == executor_id
    )
    if ids:
        statement = statement.outerjoin(
            _NODES, (_NODES.c.executor_id == _EXECUTORS.c.id) & _NODES.c.id.in_(ids)
        )
    else:
        statement = statement.outerjoin(_NODES, false())
    async with db.quick_read() as session:
        rows = (await session.execute(statement)).all()
    if not rows:
        return None
    row = rows[0]
    if (
        not same_identity(row, request)
        or row.capabilities != said.capabilities
        or row.resources != said.resources
    ):
        return None
    stored = {r[-3]: (r[-2], r[-1]) for r in rows if r[-3] is not None}
    for obs in request.nodes:
        found = stored.get(obs.node_id)
        if found is None or obs.observed.revision > found[0] or obs.observed.to_wire() != found[1]:
            return None
    return row


def _steady_statement_postgresql() -> Select[Any]:
    """One statement whatever the number of nodes (so it is prepared once per connection): the
    executor's row, and for each node the sync names, its revision and whether its stored
    observation equals the sync's. PostgreSQL compares the JSON documents itself (jsonb `=`),
    so none of them is sent back and decoded only to be compared: that decoding was the largest
    part of a steady sync (docs/benchmarks.md)."""
    sent = json_rows("sent", column("id", postgresql.UUID(as_uuid=True)), column("observed", JSONB))
    return (
        select(
            *STEADY_EXECUTOR_COLUMNS,
            (
                _EXECUTORS.c.capabilities == cast_(bindparam("capabilities", type_=Text), JSONB)
            ).label("capabilities_same"),
            (_EXECUTORS.c.resources == cast_(bindparam("resources", type_=Text), JSONB)).label(
                "resources_same"
            ),
            sent.c.id.label("node_id"),
            _NODES.c.revision.label("node_revision"),
            (_NODES.c.observed == sent.c.observed).label("observed_same"),
        )
        .select_from(
            _EXECUTORS.outerjoin(
                sent.join(_NODES, _NODES.c.id == sent.c.id),
                _NODES.c.executor_id == _EXECUTORS.c.id,
            )
        )
        .where(_EXECUTORS.c.id == bindparam("executor_id"))
    )


_STEADY_POSTGRESQL = _steady_statement_postgresql()


async def _steady_row_compared_in_postgresql(
    db: Database, executor_id: UUID, said: _Said
) -> Row[Any] | None:
    """The executor's row if the sync repeats what is stored, compared by PostgreSQL."""
    request = said.request
    async with db.quick_read() as session:
        rows = (
            await session.execute(
                _STEADY_POSTGRESQL,
                {
                    "executor_id": executor_id,
                    "sent": json_rows_value(
                        {"id": str(obs.node_id), "observed": obs.observed.to_wire()}
                        for obs in request.nodes
                    ),
                    "capabilities": json.dumps(said.capabilities),
                    "resources": json.dumps(said.resources),
                },
            )
        ).all()
    if not rows:
        return None
    row: Row[Any] = rows[0]
    if not (same_identity(row, request) and row.capabilities_same and row.resources_same):
        return None
    found = {r.node_id: r for r in rows if r.node_id is not None}
    if len(found) != len(request.nodes):
        return None  # a node that is not (or no longer) this executor's
    for obs in request.nodes:
        r = found[obs.node_id]
        if r.observed_same is not True or obs.observed.revision > r.node_revision:
            return None
    return row


async def sync_executor(
    uow: UnitOfWork,
    principal: Principal | None,
    request: SyncExecutorRequest,
    heartbeat: Heartbeat,
    seen: SeenTimes | None = None,
) -> SyncResult:
    """Heartbeat: record who the executor is, what it can run and what it observes.

    A sync from an agent process other than the executor's live instance is refused as a whole
    (InstanceConflict): nothing it says is stored, so a second copy cannot flip what the API
    shows."""
    p = require_executor(principal)
    session = uow.session
    now = utcnow()
    # Raising below rolls the transaction back, the steady claim's UPDATE included.
    steady = await _steady_claim(session, p, request, now)
    executor = steady or await _bind_executor(uow, p, request)
    if steady is not None and executor.name != request.name:
        raise forbidden(f"this key belongs to executor {executor.name!r}")
    if executor.kind != request.kind.value:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"executor {executor.name!r} is an {executor.kind}; its kind cannot change",
            field="kind",
        )
    actor = _executor_actor(executor)
    # Whatever this sync writes of the executor, what steady syncs read of it is stale.
    uow.executor_changed(executor.id)
    if steady is None:
        recorded = executor.instance_id
        await _claim_instance(session, executor, request, heartbeat, now, seen)
        if executor.instance_id != recorded:
            # A new live instance: what polls kept of the executor decided their instance
            # check by the one before (_PollLook.passes).
            uow.wake(executor.id)
    if not executor.connected:
        executor.connected = True
        # Its nodes stop showing as stale on the open nodes pages.
        uow.nodes_changed(executor.organization_id, await _node_ids_of(session, executor.id))
        await record_event(
            session,
            organization_id=executor.organization_id,
            type="executor.reconnected",
            message=f"executor {executor.name} reconnected",
            actor=actor,
            executor_id=executor.id,
        )
        await alerts.executor_came_back(session, executor, now)
    if steady is None:  # the steady claim's UPDATE wrote these already
        # Assigning an equal value writes nothing (the ORM compares), so an agent that resends
        # the same capabilities every few seconds costs no row update for them.
        executor.version = request.version
        executor.capabilities = request.capabilities.to_wire()
        executor.resources = request.resources.to_wire()
    if request.instance_id is None:
        executor.last_sync_at = now  # else written by the instance claim's UPDATE

    result = SyncResult(executor, same_instance=steady is not None)
    if request.nodes:
        changed, whole = await _store_observations(session, executor, request, actor, now, result)
        uow.nodes_changed(executor.organization_id, changed)
        for node in whole:  # still locked by _store_observations
            await auto_rollback(uow, node)
    return result


async def _node_ids_of(session: AsyncSession, executor_id: UUID) -> list[UUID]:
    return list(
        (await session.scalars(select(Node.id).where(Node.executor_id == executor_id))).all()
    )


async def _store_observations(
    session: AsyncSession,
    executor: Executor,
    request: SyncExecutorRequest,
    actor: Actor,
    now: datetime,
    result: SyncResult,
) -> tuple[list[UUID], list[Node]]:
    """Store each accepted observation with its time; record phase changes. Returns the ids of
    the nodes whose stored observation changed (not those whose report time alone moved), and
    those of them that changed in more than metric values, as loaded: the session holds them
    only weakly once flushed, and loading each again was a query per node.

    A node whose observation is repeated only gets its report time moved, in one statement.
    The rows are locked as they are read (in id order, as every writer of nodes locks them), so
    an observation is checked against the revision a concurrent lifecycle action is writing,
    not a stale one. They are read as the columns a heartbeat needs (NodeFacts), which is all
    that an observation whose metric values alone moved needs: what an executor sends for every
    node once per metrics interval (Intervals.metrics), while a sync that repeats itself is
    answered before (`unchanged_sync`). A node whose observation changed in more is loaded
    whole, under the lock already held.
    """
    ids = sorted({obs.node_id for obs in request.nodes})
    facts = {
        row.id: node_facts(row)
        for row in await session.execute(_LOCK_NODES, {"node_ids": ids, "executor_id": executor.id})
    }
    repeats = Counter(obs.node_id for obs in request.nodes)
    unchanged: list[UUID] = []
    changed: list[tuple[UUID, ObservedNodeState, dict[str, Any]]] = []
    for obs in request.nodes:
        found = facts.get(obs.node_id)
        if found is None:
            result.rejected[obs.node_id] = "not a node of this executor"
            continue
        revision, stored = found.revision, found.observed
        if obs.observed.revision > revision:
            result.rejected[obs.node_id] = (
                f"observed revision {obs.observed.revision} is newer than the spec's {revision}"
            )
            continue
        wire = obs.observed.to_wire()
        if wire == stored and repeats[obs.node_id] == 1:
            unchanged.append(obs.node_id)
        else:
            changed.append((obs.node_id, obs.observed, wire))
    if unchanged:
        await session.execute(_REPORTED_AGAIN, {"node_ids": unchanged, "now": now})
    if not changed:
        return [], []
    metric_values: list[tuple[NodeFacts, ObservedNodeState, dict[str, Any]]] = []
    beyond: list[tuple[UUID, dict[str, Any]]] = []
    for node_id, observed, wire in changed:
        fact = facts[node_id]
        if repeats[node_id] == 1 and only_metric_values_moved(fact.observed, observed):
            metric_values.append((fact, observed, wire))
        else:
            beyond.append((node_id, wire))
    whole: dict[UUID, Node] = {}
    if beyond:
        loaded = await session.scalars(_LOCKED_NODES, {"node_ids": [n for n, _ in beyond]})
        nodes = {node.id: node for node in loaded}
        for node_id, wire in beyond:  # in the sync's order, as a node named twice is stored
            node = nodes[node_id]
            before = phase_of(node)
            node.observed = wire
            node.observed_at = now
            alerts.move_marks(node, now)
            await record_phase_change(session, node, before, actor)
            whole[node_id] = node
    names = {executor.id: executor.name}
    # What each node now stores, as validated: the rules need not validate it again.
    validated = {node_id: observed for node_id, observed, _ in changed}
    if metric_values:
        await store_and_judge(session, metric_values, now, names)
    # Alerts are judged only when an observation changed: a steady heartbeat changes nothing a
    # rule reads, and the timer catches what time alone changes (sync_stalled).
    await alerts.evaluate_nodes(
        session, list(whole.values()), now, executor_names=names, observations=validated
    )
    return [node_id for node_id, _, _ in changed], list(whole.values())


# Built once (building and caching a statement per sync cost more than running it). The rows
# are locked in id order, as every writer of nodes locks them.
_LOCK_NODES = (
    select(*NODE_FACTS_COLUMNS)
    .where(
        _NODES.c.id.in_(bindparam("node_ids", expanding=True)),
        _NODES.c.executor_id == bindparam("executor_id"),
    )
    .order_by(_NODES.c.id)
    .with_for_update()
)
# Nodes `_LOCK_NODES` has locked, loaded whole (already locked: nothing else can change them).
_LOCKED_NODES = select(Node).where(Node.id.in_(bindparam("node_ids", expanding=True)))
# An observation repeated: only its report time moves.
_REPORTED_AGAIN = (
    update(_NODES)
    .where(_NODES.c.id.in_(bindparam("node_ids", expanding=True)))
    .values(observed_at=bindparam("now", type_=_NODES.c.observed_at.type))
)


# ---- one live instance per executor ----------------------------------------------------------


class InstanceConflict(DomainError):
    """An agent process acted for an executor whose live instance is another process."""

    def __init__(self, executor: Executor, refused: UUID, heartbeat: Heartbeat) -> None:
        live, seen = executor.instance_id, executor.instance_seen_at
        assert live is not None
        when = (
            f"last synced at {seen.isoformat(timespec='seconds')} "
            f"({max(0.0, (utcnow() - seen).total_seconds()):.0f} s ago)"
            if seen is not None
            else "has not synced yet"
        )
        super().__init__(
            ErrorCode.EXECUTOR_INSTANCE_CONFLICT,
            f"executor {executor.name!r} is run by another agent process (instance {live}), "
            f"which {when}; this process (instance {refused}) is refused until that one has been "
            f"silent for {heartbeat.timeout:g} s. Stop the other agent, or give this host its "
            "own executor name and key",
            details={
                "instanceId": str(refused),
                "liveInstanceId": str(live),
                "liveSeenAt": seen.isoformat() if seen is not None else None,
            },
        )
        self.executor_id = executor.id
        self.executor_name = executor.name
        self.organization_id = executor.organization_id
        self.refused = refused
        self.live = live
        self.live_seen_at = seen


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _instance_live(executor: Executor, heartbeat: Heartbeat, now: datetime) -> bool:
    """Whether the recorded instance counts as running: synced within the heartbeat timeout,
    or (during a restarted control plane's grace) recorded at all."""
    return _recorded_live(executor.instance_id, executor.instance_seen_at, heartbeat, now)


def _recorded_live(
    instance_id: UUID | None, seen_at: datetime | None, heartbeat: Heartbeat, now: datetime
) -> bool:
    if instance_id is None:
        return False
    cutoff = heartbeat.silent_before(now)
    if cutoff is None:
        return True
    return seen_at is not None and seen_at >= cutoff


async def _steady_claim(
    session: AsyncSession, p: Principal, request: SyncExecutorRequest, now: datetime
) -> Executor | None:
    """The common heartbeat in one statement: the executor's live instance syncing again.

    Locks and refreshes the executor row and returns the executor when the key is bound to an
    executor whose recorded instance is the caller's; None otherwise (first sync, another
    instance, no instance id), and the caller takes the general path (`_bind_executor`,
    `_claim_instance`). The executor is detached (made from the row: nothing is written through
    it), unless it was disconnected: a reconnect writes through it, so it is loaded.
    """
    if p.executor_id is None or request.instance_id is None:
        return None
    # What the sync says of the executor is written by the same statement: the row is updated
    # for the times anyway, and the unit of work then finds nothing left to flush (a statement
    # fewer whenever the host's resources moved). A sync refused below is rolled back whole.
    capabilities, resources = request.capabilities.to_wire(), request.resources.to_wire()
    row = (
        await session.execute(
            _STEADY_CLAIM,
            {
                "b_executor_id": p.executor_id,
                "b_instance_id": request.instance_id,
                "b_now": now,
                "b_version": request.version,
                "b_capabilities": capabilities,
                "b_resources": resources,
            },
        )
    ).first()
    if row is None:
        return None
    if not row.connected:
        return await session.get(Executor, row.id, populate_existing=True)
    return executor_of(row, capabilities, resources)


def executor_of(
    row: Row[Any], capabilities: dict[str, object], resources: dict[str, object]
) -> Executor:
    """A detached executor made from a row of `STEADY_EXECUTOR_COLUMNS` and the JSON documents
    it stores (the caller's, equal to the stored ones: they are not read back and decoded)."""
    executor = Executor(**{c.key: getattr(row, c.key) for c in STEADY_EXECUTOR_COLUMNS})
    executor.capabilities = capabilities
    executor.resources = resources
    return executor


def _steady_claim_statement() -> Update:
    """Built once: building and caching a statement per sync cost more than running it."""
    return (
        update(_EXECUTORS)
        .where(
            _EXECUTORS.c.id == bindparam("b_executor_id"),
            _EXECUTORS.c.instance_id == bindparam("b_instance_id"),
        )
        .values(
            instance_seen_at=bindparam("b_now", type_=_EXECUTORS.c.instance_seen_at.type),
            last_sync_at=bindparam("b_now", type_=_EXECUTORS.c.last_sync_at.type),
            version=bindparam("b_version", type_=_EXECUTORS.c.version.type),
            capabilities=bindparam("b_capabilities", type_=_EXECUTORS.c.capabilities.type),
            resources=bindparam("b_resources", type_=_EXECUTORS.c.resources.type),
        )
        .returning(*STEADY_EXECUTOR_COLUMNS)
    )


_STEADY_CLAIM = _steady_claim_statement()


async def _claim_instance(
    session: AsyncSession,
    executor: Executor,
    request: SyncExecutorRequest,
    heartbeat: Heartbeat,
    now: datetime,
    seen: SeenTimes | None = None,
) -> None:
    """Make the sync's instance the executor's live one, or raise InstanceConflict.

    The same instance refreshes its time; a successor on the same data directory (it names the
    recorded instance among its predecessors) takes over at once; any other instance takes over
    only from one silent past the timeout (`executor.instance_replaced`). The write is a
    conditional UPDATE, so of two instances claiming at once exactly one wins, whatever the
    isolation level. Agents that send no instance id are not checked.
    """
    mine = request.instance_id
    if mine is None:
        return
    recorded = executor.instance_id
    if seen is not None and (held := seen.executor_seen(executor.id)) is not None:
        # The live instance's latest heartbeat may not be written yet: judge by it.
        instance, at = held
        if instance == recorded and (
            executor.instance_seen_at is None or executor.instance_seen_at < at
        ):
            set_committed_value(executor, "instance_seen_at", at)
    replaced = False
    condition: ColumnElement[bool]
    if recorded is None or recorded == mine:
        condition = or_(Executor.instance_id.is_(None), Executor.instance_id == mine)
    elif recorded in request.previous_instance_ids:
        # Only a process holding the same data directory's lock on the same boot of the same
        # host names it: the recorded process has exited.
        condition = Executor.instance_id == recorded
    elif not _instance_live(executor, heartbeat, now):
        cutoff = heartbeat.silent_before(now)
        assert cutoff is not None
        condition = and_(Executor.instance_id == recorded, Executor.instance_seen_at < cutoff)
        replaced = True
    else:
        raise InstanceConflict(executor, mine, heartbeat)
    claimed = await session.execute(
        update(Executor)
        .where(Executor.id == executor.id, condition)
        # The sync's time rides on the same statement (one UPDATE per heartbeat).
        .values(instance_id=mine, instance_seen_at=now, last_sync_at=now)
        .returning(Executor.id)
        .execution_options(synchronize_session=False)
    )
    if claimed.first() is None:
        # Another instance claimed it between our read and our write: it is the live one now.
        await session.refresh(executor)
        raise InstanceConflict(executor, mine, heartbeat)
    before_seen = executor.instance_seen_at
    set_committed_value(executor, "instance_id", mine)
    set_committed_value(executor, "instance_seen_at", now)
    set_committed_value(executor, "last_sync_at", now)
    if recorded == mine:
        return
    # A new live instance: refusals recorded against the previous one are news again.
    await session.execute(
        delete(ExecutorInstanceRefusal).where(ExecutorInstanceRefusal.executor_id == executor.id)
    )
    if replaced:
        assert recorded is not None
        await record_event(
            session,
            organization_id=executor.organization_id,
            type="executor.instance_replaced",
            level=EventLevel.WARN,
            message=f"executor {executor.name}: agent process {mine} took over from {recorded}, "
            f"silent since {before_seen.isoformat(timespec='seconds') if before_seen else '?'}",
            actor=_executor_actor(executor),
            executor_id=executor.id,
            payload={
                "instanceId": str(mine),
                "previousInstanceId": str(recorded),
                "previousSeenAt": before_seen.isoformat() if before_seen else None,
            },
        )


async def check_instance(
    session: AsyncSession, principal: Principal | None, instance: UUID | None, heartbeat: Heartbeat
) -> None:
    """Raise InstanceConflict when `instance` is not the executor's live instance.

    For calls other than the sync (spec poll, runtime events, teardown confirmations): they
    never claim the executor, they are only refused while another instance is live.
    """
    p = require_executor(principal)
    if instance is None or p.executor_id is None:
        return
    executor = await session.get(Executor, p.executor_id, populate_existing=True)
    if executor is None or executor.instance_id in (None, instance):
        return
    if _instance_live(executor, heartbeat, utcnow()):
        raise InstanceConflict(executor, instance, heartbeat)


@asynccontextmanager
async def recording_refusals(db: Database) -> AsyncIterator[None]:
    """Let an InstanceConflict through, after recording it (in a transaction of its own)."""
    try:
        yield
    except InstanceConflict as conflict:
        await record_instance_refusal(db, conflict)
        raise


async def record_instance_refusal(db: Database, conflict: InstanceConflict) -> None:
    """Record `executor.instance_refused` (warn) once per refused instance, not per attempt."""
    now = utcnow()
    async with db.write() as uow:
        session = uow.session
        inserted = await session.execute(
            dialect_insert(session, ExecutorInstanceRefusal)
            .values(
                executor_id=conflict.executor_id,
                instance_id=conflict.refused,
                first_refused_at=now,
                last_refused_at=now,
            )
            .on_conflict_do_nothing()
            .returning(ExecutorInstanceRefusal.instance_id)
        )
        if inserted.first() is None:
            await session.execute(
                update(ExecutorInstanceRefusal)
                .where(
                    ExecutorInstanceRefusal.executor_id == conflict.executor_id,
                    ExecutorInstanceRefusal.instance_id == conflict.refused,
                )
                .values(last_refused_at=now)
            )
            return
        seen = conflict.live_seen_at
        await record_event(
            session,
            organization_id=conflict.organization_id,
            type="executor.instance_refused",
            level=EventLevel.WARN,
            message=f"a second agent process for executor {conflict.executor_name} "
            f"(instance {conflict.refused}) was refused: instance {conflict.live} is live"
            + (f" (last synced at {seen.isoformat(timespec='seconds')})" if seen else ""),
            actor=Actor("executor", conflict.executor_id, f"executor:{conflict.executor_name}"),
            executor_id=conflict.executor_id,
            payload={
                "instanceId": str(conflict.live),
                "refusedInstanceId": str(conflict.refused),
                "liveSeenAt": seen.isoformat() if seen else None,
            },
        )


# Refusals of an instance that stopped retrying are forgotten after this long.
REFUSAL_MEMORY = timedelta(days=1)


async def sweep_instance_refusals(db: Database) -> int:
    """Forget refused instances that have not retried for a day; how many were forgotten."""
    async with db.write() as uow:
        result = await uow.session.execute(
            delete(ExecutorInstanceRefusal).where(
                ExecutorInstanceRefusal.last_refused_at < utcnow() - REFUSAL_MEMORY
            )
        )
    return _rowcount(result)


# ---- silence ------------------------------------------------------------------------------


async def sweep_offline_executors(db: Database, heartbeat: Heartbeat) -> int:
    """Record `executor.disconnected` for executors silent past the timeout; safe on replicas.

    Nothing is swept during the grace after this control plane started (services/heartbeat.py):
    executors had no one to sync with while it was away.
    """
    cutoff = heartbeat.silent_before()
    if cutoff is None:
        return 0
    # Heartbeats this process has heard but not written yet count (store/seen_times.py); if
    # they cannot be written now, the database is in trouble and the sweep below fails too.
    await db.flush_seen()
    async with db.read() as session:
        candidates = list(
            (
                await session.scalars(
                    select(Executor.id).where(
                        Executor.connected.is_(True), Executor.last_sync_at < cutoff
                    )
                )
            ).all()
        )
    marked = 0
    for executor_id in candidates:
        async with db.write() as uow:
            # The conditional update makes exactly one replica record the event.
            res = await uow.session.execute(
                update(Executor)
                .where(
                    Executor.id == executor_id,
                    Executor.connected.is_(True),
                    Executor.last_sync_at < cutoff,
                )
                .values(connected=False)
                .returning(Executor.organization_id, Executor.name, Executor.last_sync_at)
            )
            row = res.first()
            if row is None:
                continue
            uow.executor_changed(executor_id)
            await record_event(
                uow.session,
                organization_id=row.organization_id,
                type="executor.disconnected",
                level=EventLevel.WARN,
                message=f"executor {row.name} stopped reporting",
                actor=SYSTEM,
                executor_id=executor_id,
                payload={"lastSyncAt": row.last_sync_at.isoformat() if row.last_sync_at else None},
            )
            # Its nodes show as stale on the open nodes pages from now on.
            node_ids = await _node_ids_of(uow.session, executor_id)
            uow.nodes_changed(row.organization_id, node_ids)
            # In the transaction that marks it: exactly one replica opens executor_offline.
            await alerts.executor_went_offline(
                uow.session,
                row.organization_id,
                executor_id,
                row.name,
                row.last_sync_at,
                len(node_ids),
                utcnow(),
            )
            marked += 1
    return marked


# ---- spec long-poll ------------------------------------------------------------------------


def _assigned(row: Row[Any]) -> AssignedNodeSpec:
    """A node as its executor gets it, from the columns `_PENDING_SPECS` reads."""
    return AssignedNodeSpec(
        node_id=row.id,
        name=row.name,
        revision=row.revision,
        spec=NodeSpec.model_validate(row.spec),
        deleted=row.deleted_at is not None,
        retain_data=row.retain_data,
    )


def _stale(
    current: Sequence[tuple[UUID, int, bool]], known: dict[UUID, KnownRevision]
) -> tuple[list[UUID], list[KnownRevision]]:
    """From (node id, revision, deleted) of the executor's nodes: the nodes whose spec the
    executor lacks (new, newer, or deleted since), and the known nodes that are gone."""
    newer: list[UUID] = []
    present = set()
    for node_id, revision, deleted in current:
        present.add(node_id)
        held = known.get(node_id)
        if held is None or held.revision < revision or held.deleted != bool(deleted):
            newer.append(node_id)
    gone = [k for node_id, k in known.items() if node_id not in present and not k.deleted]
    return newer, gone


# One statement for a poll's look: the executor's recorded instance (for the instance check)
# and each of its nodes' revision. Most polls, held or renewed, find nothing newer.
_POLL_LOOK = (
    select(
        _EXECUTORS.c.instance_id,
        _EXECUTORS.c.instance_seen_at,
        _NODES.c.id.label("node_id"),
        _NODES.c.revision,
        _NODES.c.deleted_at.is_not(None).label("deleted"),
    )
    .select_from(_EXECUTORS.outerjoin(_NODES, _NODES.c.executor_id == _EXECUTORS.c.id))
    .where(_EXECUTORS.c.id == bindparam("executor_id"))
)
# The specs a poll sends, as the columns they need: loaded whole (the observation, marks and
# times decoded into ORM entities) they were most of a first poll's cost, an agent's first
# after it starts or a fleet's at its start (docs/benchmarks.md).
_PENDING_SPECS: Select[Any] = (
    select(
        _NODES.c.id,
        _NODES.c.name,
        _NODES.c.revision,
        _NODES.c.spec,
        _NODES.c.deleted_at,
        _NODES.c.retain_data,
    )
    .where(_NODES.c.id.in_(bindparam("node_ids", expanding=True)))
    .order_by(_NODES.c.id)
)


@dataclass(frozen=True, slots=True)
class _PollLook:
    """A poll's look at the database: the executor's recorded instance and (node id, revision,
    deleted) of each of its nodes. Kept by the notifier until the executor's next wake-up, which
    every write that changes it sends (a new revision, a node created, deleted or torn down, a
    new live instance), so that a renewed poll reads nothing (`ChangeNotifier.remember`)."""

    instance_id: UUID | None
    nodes: tuple[tuple[UUID, int, bool], ...]

    def passes(self, instance: UUID | None, heartbeat: Heartbeat | None) -> bool:
        """Whether the instance check passes whatever the time: no check asked, or the
        recorded instance is the caller's or none (another one's liveness moves with time)."""
        return heartbeat is None or instance is None or self.instance_id in (None, instance)


async def _pending_specs(
    session: AsyncSession,
    principal: Principal | None,
    executor_id: UUID,
    known: dict[UUID, KnownRevision],
    instance: UUID | None,
    heartbeat: Heartbeat | None,
) -> tuple[list[AssignedNodeSpec], _PollLook | None]:
    """What the executor lacks: new or newer specs, tombstones it has not seen, and nodes gone;
    and the look it was decided on (None when the executor's row is gone). With `instance` and
    `heartbeat`, first refuses a process that is not the executor's live instance
    (InstanceConflict), as `check_instance` does.

    Most polls find nothing: revisions are read first, and specs only of the nodes that changed.
    """
    rows = (await session.execute(_POLL_LOOK, {"executor_id": executor_id})).all()
    if (
        rows
        and instance is not None
        and heartbeat is not None
        and rows[0].instance_id not in (None, instance)
        and _recorded_live(rows[0].instance_id, rows[0].instance_seen_at, heartbeat, utcnow())
    ):
        # Another process looks live: decided (and refused) on the executor as loaded again.
        await check_instance(session, principal, instance, heartbeat)
    # Rows unpack as tuples; Result.tuples() is deprecated in SQLAlchemy 2.1, and each call's
    # warning walked the stack, giving every coroutine of a held poll a frame object to keep.
    look = (
        _PollLook(
            rows[0].instance_id,
            tuple((row[2], row[3], bool(row[4])) for row in rows if row[2] is not None),
        )
        if rows
        else None
    )
    newer, gone = _stale(look.nodes if look else (), known)
    out: list[AssignedNodeSpec] = []
    if newer:
        out += [
            _assigned(row) for row in await session.execute(_PENDING_SPECS, {"node_ids": newer})
        ]
    return out + _tombstones(gone), look


def _tombstones(gone: list[KnownRevision]) -> list[AssignedNodeSpec]:
    return [
        AssignedNodeSpec(node_id=k.node_id, name="", revision=k.revision, spec=None, deleted=True)
        for k in gone
    ]


async def _read_pending(
    db: Database,
    executor_id: UUID,
    held: dict[UUID, KnownRevision],
    principal: Principal | None,
    instance: UUID | None,
    heartbeat: Heartbeat | None,
    waiter: "asyncio.Future[None]",
    may_recall: bool,
) -> list[AssignedNodeSpec]:
    """One look at what the executor lacks, with the instance check when `heartbeat` is given;
    with `may_recall`, from the look kept since the executor's last wake-up when there is one
    and it decides.

    Only a poll that waits may recall: on PostgreSQL the wake-up of a commit made by another
    process (or just before) may be on its way, and reaches the waiting poll, which then reads;
    a poll that does not wait would answer without it.

    A function of its own so that the session (closed, but with its identity map and event
    dispatch) is not a local of the poll that then waits: thousands of polls are held at once.
    """
    key = str(executor_id)
    kept = db.notifier.recall(key) if may_recall else None
    if isinstance(kept, _PollLook) and kept.passes(instance, heartbeat):
        newer, gone = _stale(kept.nodes, held)
        if not newer:  # specs to send are read from the database, with the look again
            poll_looks.labels(source="kept").inc()
            return _tombstones(gone)
    poll_looks.labels(source="database").inc()
    # Each statement may see a later commit than the one before; the specs loaded are the ones
    # the revisions said changed, or newer still, and a node gone in between is simply not
    # returned (the next poll reports it).
    async with db.quick_read() as session:
        pending, look = await _pending_specs(
            session, principal, executor_id, held, instance, heartbeat
        )
    if look is not None:
        db.notifier.remember(key, waiter, look)
    return pending


async def poll_specs(
    db: Database,
    principal: Principal | None,
    known: list[KnownRevision],
    wait_seconds: float,
    max_wait: float = MAX_POLL_WAIT_SECONDS,
    instance: UUID | None = None,
    heartbeat: Heartbeat | None = None,
) -> list[AssignedNodeSpec]:
    """Specs newer than what the executor holds; held up to `wait_seconds` (at most
    `max_wait`) until a commit. With `instance` and `heartbeat`, first refuses a process that
    is not the executor's live instance (InstanceConflict), in the same read."""
    p = require_executor(principal)
    if p.executor_id is None:
        raise DomainError(
            ErrorCode.INVALID_ACTION, "call syncExecutor once before polling for specs"
        )
    executor_id = p.executor_id
    wait_seconds = max(0.0, min(wait_seconds, max_wait))
    deadline = time.monotonic() + wait_seconds
    held = {k.node_id: k for k in known}
    key = str(executor_id)
    first = True
    while True:
        waiter = db.notifier.subscribe(key)
        try:
            pending = await _read_pending(
                db,
                executor_id,
                held,
                principal,
                instance,
                heartbeat if first else None,
                waiter,
                may_recall=wait_seconds > 0,
            )
            first = False
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0 or db.notifier.closing:
                return pending
            try:
                # asyncio.timeout, not wait_for: no second task per held poll (10,000 are held).
                async with asyncio.timeout(remaining):
                    with spec_polls_held.track_inprogress():
                        # Done already if a change came while reading; cancelled (and
                        # then left alone by the notifier) when the timeout fires.
                        await waiter
            except TimeoutError:
                return []
        finally:
            db.notifier.unsubscribe(key, waiter)


# ---- teardown and runtime events -----------------------------------------------------------


async def confirm_teardown(uow: UnitOfWork, principal: Principal | None, node_id: UUID) -> bool:
    """The executor tore a deleted node down: remove the row (history stays). Idempotent."""
    p = require_executor(principal)
    if p.executor_id is None:
        raise DomainError(ErrorCode.INVALID_ACTION, "call syncExecutor once before confirming")
    session = uow.session
    node = await session.scalar(
        select(Node).where(Node.id == node_id, Node.executor_id == p.executor_id).with_for_update()
    )
    if node is None:
        return False
    if node.deleted_at is None:
        raise DomainError(
            ErrorCode.INVALID_ACTION, f"node {node.name!r} is not being deleted", field="nodeId"
        )
    executor = await session.get(Executor, node.executor_id)
    assert executor is not None
    await record_event(
        session,
        organization_id=node.organization_id,
        type="node.removed",
        message=f"{executor.name} tore down {node.name}"
        f" ({'data kept' if node.retain_data else 'data removed'})",
        actor=_executor_actor(executor),
        node=node,
        payload={"retainData": node.retain_data, "revision": node.revision},
    )
    await alerts.evaluate_nodes(
        session, [node], utcnow(), executor_names={executor.id: executor.name}
    )
    await alerts.forget_node(session, node.id)
    await session.delete(node)
    uow.wake(executor.id)
    uow.nodes_changed(node.organization_id, [node.id])
    return True


async def report_runtime_events(
    uow: UnitOfWork, principal: Principal | None, events: list[RuntimeEvent]
) -> int:
    """Append runtime events from the executor; events about others' nodes are dropped.

    Every event was parsed as a RuntimeEvent, so its type is in the executor's own namespace.
    """
    p = require_executor(principal)
    if len(events) > MAX_RUNTIME_EVENTS_PER_CALL:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"at most {MAX_RUNTIME_EVENTS_PER_CALL} events per call",
            field="events",
        )
    session = uow.session
    executor = await session.get(Executor, p.executor_id) if p.executor_id else None
    if executor is None:
        raise DomainError(ErrorCode.INVALID_ACTION, "call syncExecutor once before reporting")
    node_ids = {e.node_id for e in events if e.node_id is not None}
    nodes = {
        n.id: n
        for n in await session.scalars(
            select(Node).where(Node.id.in_(node_ids), Node.executor_id == executor.id)
        )
    }
    accepted = 0
    for ev in events:
        node = nodes.get(ev.node_id) if ev.node_id is not None else None
        if ev.node_id is not None and node is None:
            continue
        payload = dict(ev.payload)
        if ev.occurred_at is not None:
            # The executor's claim is kept as data; the event's own time is the server's.
            payload["occurredAt"] = ev.occurred_at.isoformat()
        await record_event(
            session,
            organization_id=executor.organization_id,
            type=ev.type.value,
            level=ev.level,
            source=EventSource.RUNTIME,
            message=ev.message,
            actor=_executor_actor(executor),
            node=node,
            executor_id=executor.id,
            payload=payload,
        )
        accepted += 1
    return accepted


# ---- rebinding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RebindResult:
    """The executor, the key now bound to it, and the keys that were bound before (revoked)."""

    executor: Executor
    key: ApiKey
    revoked: list[ApiKey]


async def rebind_executor(
    uow: UnitOfWork, principal: Principal | None, executor_id: UUID, api_key_id: UUID
) -> RebindResult:
    """Bind an executor key to an executor (owner/admin) and revoke the keys bound before.

    The usual reason is a host that lost its key (or was rebuilt): the old key must stop
    working the moment another host takes the name over.
    """
    p = require_mutator(principal)
    session = uow.session
    executor = await session.scalar(
        select(Executor)
        .where(Executor.id == executor_id, Executor.organization_id == p.organization_id)
        .with_for_update()
    )
    if executor is None:
        raise DomainError(ErrorCode.NOT_FOUND, "executor not found", field="executorId")
    key = await session.scalar(
        select(ApiKey)
        .where(ApiKey.id == api_key_id, ApiKey.organization_id == p.organization_id)
        .with_for_update()
    )
    if key is None:
        raise DomainError(ErrorCode.NOT_FOUND, "API key not found", field="apiKeyId")
    if key.kind != ApiKeyKind.EXECUTOR.value:
        raise DomainError(
            ErrorCode.INVALID_INPUT, "only an executor key can drive an executor", field="apiKeyId"
        )
    now = utcnow()
    if not key.enabled or (key.expires_at is not None and key.expires_at <= now):
        raise DomainError(
            ErrorCode.INVALID_INPUT, f"key {key.name!r} is revoked or expired", field="apiKeyId"
        )
    if key.executor_id is not None and key.executor_id != executor.id:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"key {key.name!r} drives another executor; create a new key for this one",
            field="apiKeyId",
        )
    key.executor_id = executor.id
    uow.executor_changed(executor.id)
    revoked = list(
        (
            await session.scalars(
                select(ApiKey)
                .where(
                    ApiKey.executor_id == executor.id,
                    ApiKey.id != key.id,
                    ApiKey.enabled.is_(True),
                )
                .order_by(ApiKey.created_at)
                .with_for_update()
            )
        ).all()
    )
    actor = actor_of(p)
    # Cached authentications of these keys are dropped when this commits (store/key_cache.py).
    uow.keys_changed([key.id, *(old.id for old in revoked)])
    for old in revoked:
        old.enabled = False
        old.revoked_at = now
        await record_event(
            session,
            organization_id=executor.organization_id,
            type="apikey.revoked",
            message=f"{p.label} revoked executor key {old.name!r} "
            f"(executor {executor.name} rebound to key {key.name!r})",
            actor=actor,
            executor_id=executor.id,
            payload={"keyId": str(old.id)},
        )
    await record_event(
        session,
        organization_id=executor.organization_id,
        type="executor.rebound",
        level=EventLevel.WARN,
        message=f"{p.label} bound executor {executor.name} to key {key.name!r}"
        + (f"; revoked {', '.join(repr(k.name) for k in revoked)}" if revoked else ""),
        actor=actor,
        executor_id=executor.id,
        payload={
            "keyId": str(key.id),
            "keyName": key.name,
            "revokedKeyIds": [str(k.id) for k in revoked],
            "revokedKeyNames": [k.name for k in revoked],
        },
    )
    return RebindResult(executor, key, revoked)
