"""Nodes: deploy, update, lifecycle actions, delete, and reads scoped to the caller."""

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth.principal import Principal, require_mutator, require_principal
from nodeplane.controlplane.errors import DomainError, ErrorCode, not_found, validation_error
from nodeplane.controlplane.services import alerts
from nodeplane.controlplane.services.actors import SYSTEM, Actor, actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.services.filter_text import check_filter_text
from nodeplane.controlplane.store.database import UnitOfWork
from nodeplane.controlplane.store.models import Executor, Node, SpecRevision
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import (
    DesiredState,
    EventLevel,
    ExecutorCapabilities,
    LifecycleAction,
    NodePhase,
    NodeSpec,
    ObservedNodeState,
    derive_node_phase,
    json_value_problem,
    node_name_problem,
    override_problems,
    spec_bound_problems,
    unstorable_text_problem,
    unsupported_reason,
)
from nodeplane.protocol.capabilities import MANAGED
from nodeplane.protocol.observed import stored_observation
from nodeplane.protocol.quantities import quantity_value
from nodeplane.protocol.spec_bounds import SpecProblem
from nodeplane.protocol.spec_diff import SpecChange, spec_diff
from nodeplane.protocol.spec_edit import AUTO_ROLLBACK_CAUSE, ROLLBACK_CAUSE, edit_problems

MAX_PAGE = 200


# ---- derived views -------------------------------------------------------------------------


def spec_of(node: Node) -> NodeSpec:
    """The node's current spec as a model."""
    return NodeSpec.model_validate(node.spec)


def observed_of(node: Node) -> ObservedNodeState | None:
    """The node's latest observation as a model, or None (`stored_observation`)."""
    return stored_observation(node.observed)


def phase_of(node: Node) -> NodePhase:
    """The node's derived phase (never stored)."""
    return derive_node_phase(
        desired_state=node.spec.get("desiredState", DesiredState.RUNNING),
        revision=node.revision,
        deleted=node.deleted_at is not None,
        observed=observed_of(node),
    )


async def record_phase_change(
    session: AsyncSession, node: Node, before: NodePhase, actor: Actor
) -> None:
    """Record `node.lifecycle.transition` if the node's derived phase moved away from `before`."""
    after = phase_of(node)
    if after == before:
        return
    observed = observed_of(node)
    await record_event(
        session,
        organization_id=node.organization_id,
        type="node.lifecycle.transition",
        level=EventLevel.ERROR if after is NodePhase.ERROR else EventLevel.INFO,
        message=f"{node.name}: {before.value} → {after.value}",
        actor=actor,
        node=node,
        payload={
            "from": before.value,
            "to": after.value,
            "revision": node.revision,
            "observedRevision": observed.revision if observed else None,
        },
    )


# ---- validation ----------------------------------------------------------------------------


def parse_spec(raw: Any) -> NodeSpec:
    """Validate a wire-form spec and the bounds of a write, or raise `invalid_node_config`
    listing every problem."""
    if problem := json_value_problem(raw):
        raise DomainError(
            ErrorCode.INVALID_NODE_CONFIG,
            f"invalid spec: {problem}",
            field="spec",
            details={"problems": [{"path": "", "message": problem}]},
        )
    try:
        spec = NodeSpec.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, ErrorCode.INVALID_NODE_CONFIG, "spec") from None
    if bounds := spec_bound_problems(spec):
        problems = [{"path": p.path, "message": p.message} for p in bounds]
        raise DomainError(
            ErrorCode.INVALID_NODE_CONFIG,
            "invalid spec: " + "; ".join(f"{p.path}: {p.message}" for p in bounds[:5]),
            field="spec",
            details={"problems": problems},
        )
    return spec


def declared_capabilities(executor: Executor) -> ExecutorCapabilities:
    """What the executor declared at its last sync; nothing, if that no longer passes the rules
    (it was stored before them) — its next sync declares it again."""
    try:
        return ExecutorCapabilities.model_validate(executor.capabilities or {})
    except ValidationError:
        return ExecutorCapabilities()


def check_against_executor(spec: NodeSpec, executor: Executor) -> None:
    """Refuse specs the executor cannot run, or whose overrides break the rules its adapters
    declared (managed settings, values the config format cannot hold, paths outside the node)."""
    capabilities = declared_capabilities(executor)
    if reason := unsupported_reason(spec, capabilities):
        raise DomainError(ErrorCode.CHAIN_NOT_SUPPORTED_BY_EXECUTOR, reason, field="spec")
    if problems := override_problems(spec, capabilities):
        managed = [o for o, why in problems.items() if why == MANAGED]
        other = [f"{o} ({why})" for o, why in problems.items() if why != MANAGED]
        parts = []
        if managed:
            parts.append("overrides touch settings nodeplane manages: " + ", ".join(managed))
        if other:
            parts.append("overrides the executor cannot apply: " + ", ".join(other))
        raise DomainError(
            ErrorCode.INVALID_NODE_CONFIG,
            "; ".join(parts),
            field="spec.overrides",
            details={"offenders": list(problems), "reasons": problems},
        )


# ---- reads ---------------------------------------------------------------------------------


def scoped_nodes(principal: Principal) -> Select[Node]:
    """Nodes the caller may see: its organization's, and for executor keys only its own."""
    query = select(Node).where(Node.organization_id == principal.organization_id)
    if principal.is_executor:
        query = query.where(Node.executor_id == principal.executor_id)
    return query


async def get_node(
    session: AsyncSession, principal: Principal | None, node_id: UUID
) -> Node | None:
    """The node if the caller may see it, else None (never a hint that it exists)."""
    p = require_principal(principal)
    if p.organization_id is None:
        return None
    node: Node | None = await session.scalar(scoped_nodes(p).where(Node.id == node_id))
    return node


@dataclass(frozen=True)
class NodeFilter:
    """Which nodes to list; `name` matches a substring."""

    name: str | None = None
    chain: str | None = None
    phase: NodePhase | None = None
    executor_id: UUID | None = None


@dataclass(frozen=True)
class NodePage:
    """One page of nodes ordered by name, and the cursor of the next page."""

    items: list[Node]
    end_cursor: str | None
    has_next_page: bool


def _decode_cursor(after: str) -> tuple[str, UUID] | None:
    name, _, raw_id = after.rpartition("/")
    try:
        return name, UUID(raw_id)
    except ValueError:
        return None


def _filtered(p: Principal, flt: NodeFilter) -> Select[Any]:
    """The caller's nodes through `flt`'s stored-column filters (not the derived phase)."""
    query: Select[Any] = scoped_nodes(p)
    if flt.name:
        query = query.where(Node.name.contains(flt.name, autoescape=True))
    if flt.chain:
        query = query.where(Node.chain == flt.chain)
    if flt.executor_id is not None:
        query = query.where(Node.executor_id == flt.executor_id)
    return query


async def list_nodes(
    session: AsyncSession,
    principal: Principal | None,
    flt: NodeFilter,
    *,
    first: int = 50,
    after: str | None = None,
) -> NodePage:
    """Nodes the caller may see, by name; the phase filter is applied to the derived phase."""
    p = require_principal(principal)
    check_filter_text(("filter.name", flt.name), ("filter.chain", flt.chain), ("after", after))
    if p.organization_id is None:
        return NodePage([], None, False)
    first = max(1, min(first, MAX_PAGE))
    query = _filtered(p, flt)
    if after:
        cursor = _decode_cursor(after)
        if cursor is None:
            return NodePage([], None, False)
        name, node_id = cursor
        query = query.where((Node.name > name) | ((Node.name == name) & (Node.id > node_id)))
    query = query.order_by(Node.name, Node.id)

    items: list[Node] = []
    batch = max(first + 1, 100)
    offset = 0
    # The phase is derived, not stored, so it is filtered here, scanning in batches.
    while len(items) <= first:
        rows = list((await session.scalars(query.offset(offset).limit(batch))).all())
        items += [n for n in rows if flt.phase is None or phase_of(n) == flt.phase]
        if len(rows) < batch:
            break
        offset += batch
    has_next = len(items) > first
    items = items[:first]
    end = f"{items[-1].name}/{items[-1].id}" if items else None
    return NodePage(items, end, has_next)


# ---- listings: the columns a list of nodes shows, a numbered page at a time ----------------

NodeSort = Literal["name", "chain", "phase", "executor", "updated"]
NODE_SORTS: tuple[NodeSort, ...] = ("name", "chain", "phase", "executor", "updated")
# The most rows one listing page holds (the UI offers pages up to this size).
MAX_LISTING_PAGE = 500


@dataclass(frozen=True)
class NodeListing:
    """What a list of nodes shows of one node: its columns without the spec, of which only the
    desired state (read out of the JSON by the database) is needed."""

    id: UUID
    executor_id: UUID
    name: str
    chain: str
    network: str
    desired_state: DesiredState
    revision: int
    observed: dict[str, Any] | None
    observed_at: datetime | None
    deleted_at: datetime | None
    updated_at: datetime

    def observation(self) -> ObservedNodeState | None:
        """The latest observation as a model (None if it no longer passes the rules)."""
        return stored_observation(self.observed)

    def phase(self, observation: ObservedNodeState | None) -> NodePhase:
        """The derived phase, given `observation()` (validated once by the caller)."""
        return derive_node_phase(
            desired_state=self.desired_state,
            revision=self.revision,
            deleted=self.deleted_at is not None,
            observed=observation,
        )


@dataclass(frozen=True)
class NodeListingPage:
    """One numbered page of listings, the number of nodes through the filter, and the page
    actually shown (a page past the last is the last)."""

    items: list[NodeListing]
    total: int
    page: int
    per_page: int


_LISTING_COLUMNS = (
    Node.id,
    Node.executor_id,
    Node.name,
    Node.chain,
    Node.network,
    Node.spec["desiredState"].as_string(),
    Node.revision,
    Node.observed,
    Node.observed_at,
    Node.deleted_at,
    Node.updated_at,
)
_PHASE_ORDER = {phase: i for i, phase in enumerate(NodePhase)}


def _listing(row: Sequence[Any]) -> NodeListing:
    (node_id, executor_id, name, chain, network, desired, *rest) = row
    revision, observed, observed_at, deleted_at, updated_at = rest
    return NodeListing(
        node_id,
        executor_id,
        name,
        chain,
        network,
        DesiredState(desired) if desired is not None else DesiredState.RUNNING,
        revision,
        observed,
        observed_at,
        deleted_at,
        updated_at,
    )


def _listing_order(sort: NodeSort, descending: bool) -> list[Any]:
    """The columns `sort` orders by, the node's name and id breaking ties so that pages never
    overlap; the phase is derived, so it is sorted afterwards, stably, from this order."""
    keys: dict[NodeSort, list[Any]] = {
        "name": [],
        "chain": [Node.chain, Node.network],
        "phase": [],
        "executor": [Executor.name],
        "updated": [Node.updated_at],
    }
    columns = [*keys[sort], Node.name, Node.id]
    return [c.desc() for c in columns] if descending else columns


async def list_node_listings(
    session: AsyncSession,
    principal: Principal | None,
    flt: NodeFilter,
    *,
    sort: NodeSort = "name",
    descending: bool = False,
    page: int = 1,
    per_page: int = 100,
) -> NodeListingPage:
    """Page `page` (1-based; past the last, the last) of `per_page` nodes the caller may see
    through `flt`, ordered by `sort` then name and id (every key reversed when `descending`),
    and how many nodes there are through `flt`: a count and one read of the page's rows, or,
    when the derived phase filters or sorts, one read of every node through the other filters."""
    p = require_principal(principal)
    check_filter_text(("filter.name", flt.name), ("filter.chain", flt.chain))
    per_page = max(1, min(per_page, MAX_LISTING_PAGE))
    if p.organization_id is None:
        return NodeListingPage([], 0, 1, per_page)
    query = _filtered(p, flt)
    listing = query.with_only_columns(*_LISTING_COLUMNS).order_by(*_listing_order(sort, descending))
    if sort == "executor":
        listing = listing.join(Executor, Executor.id == Node.executor_id)

    if flt.phase is None and sort != "phase":
        total = await session.scalar(query.with_only_columns(func.count(Node.id))) or 0
        page = _clamp(page, total, per_page)
        rows = await session.execute(listing.offset((page - 1) * per_page).limit(per_page))
        return NodeListingPage([_listing(r) for r in rows], total, page, per_page)

    listed = [_listing(r) for r in await session.execute(listing)]
    phases = {n.id: n.phase(n.observation()) for n in listed}
    if flt.phase is not None:
        listed = [n for n in listed if phases[n.id] == flt.phase]
    if sort == "phase":
        # Stable: ties keep the database's name order (reversed with the phases when descending).
        listed.sort(key=lambda n: _PHASE_ORDER[phases[n.id]], reverse=descending)
    page = _clamp(page, len(listed), per_page)
    start = (page - 1) * per_page
    return NodeListingPage(listed[start : start + per_page], len(listed), page, per_page)


def _clamp(page: int, total: int, per_page: int) -> int:
    return max(1, min(page, math.ceil(total / per_page)))


async def node_listings(
    session: AsyncSession, organization_id: UUID, node_ids: Iterable[UUID], batch: int = 500
) -> list[NodeListing]:
    """The organization's nodes among `node_ids` (for pushing changed rows to open lists; the
    caller has already scoped the organization to its reader)."""
    wanted = sorted(node_ids)
    listed: list[NodeListing] = []
    for start in range(0, len(wanted), batch):
        rows = await session.execute(
            select(*_LISTING_COLUMNS).where(
                Node.organization_id == organization_id,
                Node.id.in_(wanted[start : start + batch]),
            )
        )
        listed += [_listing(r) for r in rows]
    return listed


async def list_revisions(
    session: AsyncSession, principal: Principal | None, node_id: UUID
) -> list[SpecRevision]:
    """A node's spec history, oldest first; still readable after the node is gone."""
    p = require_principal(principal)
    if p.organization_id is None:
        return []
    if p.is_executor and await get_node(session, p, node_id) is None:
        return []
    rows = await session.scalars(
        select(SpecRevision)
        .where(SpecRevision.node_id == node_id, SpecRevision.organization_id == p.organization_id)
        .order_by(SpecRevision.revision)
    )
    return list(rows.all())


async def diff_revisions(
    session: AsyncSession, principal: Principal | None, node_id: UUID, from_rev: int, to_rev: int
) -> list[SpecChange] | None:
    """What changed between two revisions of a node, or None if either is not visible."""
    revisions = {r.revision: r for r in await list_revisions(session, principal, node_id)}
    if from_rev not in revisions or to_rev not in revisions:
        return None
    return spec_diff(revisions[from_rev].spec, revisions[to_rev].spec)


# ---- writes --------------------------------------------------------------------------------


async def _lock_node(uow: UnitOfWork, principal: Principal, node_id: UUID) -> Node:
    # FOR UPDATE serializes writers of one node on PostgreSQL (SQLite serializes all writes), so
    # the phase read before a write is the one the write replaces. Its executor comes along
    # (not locked) and is held to the end of the transaction: every writer's checks or answer
    # read it, and found in the session's identity map it is no round trip of its own.
    row = (
        await uow.session.execute(
            scoped_nodes(principal)
            .add_columns(Executor)
            .join(Executor, Executor.id == Node.executor_id)
            .where(Node.id == node_id)
            .with_for_update(of=Node)
        )
    ).first()
    if row is None:
        raise not_found("node")
    node: Node = row[0]
    uow.hold(row[1])
    return node


def _check_writable(node: Node, expected_revision: int | None) -> None:
    if node.deleted_at is not None:
        raise DomainError(ErrorCode.NODE_DELETING, f"node {node.name!r} is being deleted")
    if expected_revision is not None and expected_revision != node.revision:
        raise DomainError(
            ErrorCode.REVISION_CONFLICT,
            f"node {node.name!r} is at revision {node.revision}, not {expected_revision}",
            field="expectedRevision",
            details={"currentRevision": node.revision},
        )


MAX_CAUSE_LENGTH = 200  # the width of spec_revisions.cause


def _check_cause(cause: str | None) -> None:
    if cause is None:
        return
    if len(cause) > MAX_CAUSE_LENGTH:
        problem: str | None = f"must be at most {MAX_CAUSE_LENGTH} characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in cause):
        problem = "must not contain newlines or other control characters"
    else:
        problem = unstorable_text_problem(cause)
    if problem:
        raise DomainError(ErrorCode.INVALID_INPUT, f"cause {problem}", field="cause")


def _history_row(node: Node, actor: Actor, cause: str) -> SpecRevision:
    return SpecRevision(
        node_id=node.id,
        organization_id=node.organization_id,
        node_name=node.name,
        revision=node.revision,
        spec=node.spec,
        author_id=actor.id,
        author=actor.label,
        cause=cause,
    )


async def _write_revision(
    uow: UnitOfWork,
    node: Node,
    spec: NodeSpec,
    actor: Actor,
    cause: str,
    record: Callable[[], Awaitable[object]],
) -> None:
    """Store `spec` as the node's next revision; `record` records the caller's own event (it
    reads the new revision), after the phase change's and before the alert rules' read, so
    both events are one INSERT rather than two round trips."""
    before = phase_of(node)
    node.spec = spec.to_wire()
    node.revision += 1
    node.chain = spec.chain
    node.network = spec.network
    node.updated_at = utcnow()
    uow.session.add(_history_row(node, actor, cause))
    await uow.session.flush()
    await record_phase_change(uow.session, node, before, actor)
    await record()
    # A new desired state or a delete may clear (or, on a start, not yet open) an incident.
    await alerts.evaluate_nodes(uow.session, [node], utcnow())
    uow.wake(node.executor_id)
    uow.nodes_changed(node.organization_id, [node.id])


async def create_node(
    uow: UnitOfWork,
    principal: Principal | None,
    *,
    executor_id: UUID,
    name: str,
    spec: Any,
) -> Node:
    """Deploy a node: validate, store revision 1, record `node.created`."""
    p = require_mutator(principal)
    if problem := node_name_problem(name):
        raise DomainError(ErrorCode.INVALID_INPUT, problem, field="name")
    executor = await uow.session.scalar(
        select(Executor).where(
            Executor.id == executor_id, Executor.organization_id == p.organization_id
        )
    )
    if executor is None:
        raise DomainError(ErrorCode.NOT_FOUND, "executor not found", field="executorId")
    node_spec = parse_spec(spec)
    check_against_executor(node_spec, executor)
    taken = await uow.session.scalar(
        select(Node.id).where(Node.executor_id == executor.id, Node.name == name)
    )
    if taken is not None:
        raise DomainError(
            ErrorCode.ALREADY_EXISTS,
            f"executor {executor.name!r} already has a node named {name!r}",
            field="name",
        )
    actor = actor_of(p)
    assert p.organization_id is not None
    node = Node(
        organization_id=p.organization_id,
        executor_id=executor.id,
        name=name,
        chain=node_spec.chain,
        network=node_spec.network,
        spec=node_spec.to_wire(),
        revision=1,
    )
    uow.session.add(node)
    await uow.session.flush()
    uow.session.add(_history_row(node, actor, "created"))
    await record_event(
        uow.session,
        organization_id=node.organization_id,
        type="node.created",
        message=f"{actor.label} deployed {name} ({node_spec.chain} {node_spec.network}) "
        f"on {executor.name}",
        actor=actor,
        node=node,
        payload={"revision": 1, "chain": node_spec.chain, "network": node_spec.network},
    )
    uow.wake(executor.id)
    uow.nodes_changed(node.organization_id, [node.id])
    return node


def _edit_problems_error(problems: list[SpecProblem]) -> DomainError:
    return DomainError(
        ErrorCode.INVALID_NODE_CONFIG,
        "invalid change: " + "; ".join(f"{p.path}: {p.message}" for p in problems[:5]),
        field="spec",
        details={"problems": [{"path": p.path, "message": p.message} for p in problems]},
    )


def check_edit(before: NodeSpec, after: NodeSpec, executor: Executor) -> None:
    """Refuse a change the node cannot take in place (protocol.spec_edit), a client or version
    the executor does not declare, or overrides its adapters refuse; every edit problem at once."""
    capabilities = declared_capabilities(executor)
    problems = edit_problems(before, after, capabilities)
    if not problems and (reason := unsupported_reason(after, capabilities)):
        changed = [r for r, sel in after.clients.items() if before.clients.get(r) != sel]
        path = f"clients.{changed[0]}" if len(changed) == 1 else "clients"
        problems.append(SpecProblem(path, reason))
    if problems:
        raise _edit_problems_error(problems)
    check_against_executor(after, executor)


def _merged(current: dict[str, Any], section: str, given: Any) -> Any:
    """`given` laid over the current mapping `section` key by key (None: the current one)."""
    if given is None:
        return current.get(section)
    if not isinstance(given, dict):
        raise DomainError(
            ErrorCode.INVALID_NODE_CONFIG, f"{section} must be an object", field=section
        )
    return {**(current.get(section) or {}), **given}


@dataclass(frozen=True)
class SpecEdit:
    """What an edit asks for (see `update_node`); None leaves a section as it is."""

    clients: Any = None
    overrides: Any = None
    resources: Any = None
    storage: Any = None
    rollout: Any = None
    spec: Any = None


def edited_spec(node: Node, edit: SpecEdit) -> NodeSpec:
    """The node's spec with `edit` applied, validated as any written spec is (not yet against
    the edit rules and the executor: `check_edit`)."""
    raw: dict[str, Any] = dict(node.spec)
    if edit.spec is not None:
        if not isinstance(edit.spec, dict):
            raise DomainError(ErrorCode.INVALID_NODE_CONFIG, "spec must be an object", field="spec")
        raw = {**edit.spec}
        for key in ("desiredState", "restartGeneration"):
            raw[key] = node.spec.get(key, raw.get(key))
    raw["clients"] = _merged(raw, "clients", edit.clients)
    raw["storage"] = _merged(raw, "storage", edit.storage)
    if edit.rollout is not None:
        raw["rollout"] = _merged(raw, "rollout", edit.rollout)
    if edit.overrides is not None:
        raw["overrides"] = edit.overrides
    if edit.resources is not None:
        raw["resources"] = edit.resources
    return parse_spec(raw)


async def preview_update(
    session: AsyncSession,
    principal: Principal | None,
    node_id: UUID,
    edit: SpecEdit,
    *,
    expected_revision: int | None = None,
) -> list[SpecChange]:
    """What `update_node` would change, refused as it would refuse; writes nothing."""
    p = require_mutator(principal)
    node: Node | None = await session.scalar(scoped_nodes(p).where(Node.id == node_id))
    if node is None:
        raise not_found("node")
    _check_writable(node, expected_revision)
    new_spec = edited_spec(node, edit)
    if new_spec.to_wire() == node.spec:
        return []
    executor = await session.get(Executor, node.executor_id)
    assert executor is not None
    check_edit(spec_of(node), new_spec, executor)
    return spec_diff(node.spec, new_spec.to_wire())


async def update_node(
    uow: UnitOfWork,
    principal: Principal | None,
    node_id: UUID,
    *,
    clients: Any = None,
    overrides: Any = None,
    resources: Any = None,
    storage: Any = None,
    rollout: Any = None,
    spec: Any = None,
    expected_revision: int | None = None,
    cause: str | None = None,
) -> Node:
    """Edit a node as a new revision; no change writes nothing.

    `spec` is a whole new spec (from a spec file) whose desired state and restart generation are
    ignored: those change through lifecycle actions. `clients` and `storage` are laid over the
    current ones role by role and key by key, `rollout` key by key; `overrides` and `resources`
    replace them. The change must pass the rules of an in-place edit and the executor's declared
    capabilities.
    """
    p = require_mutator(principal)
    _check_cause(cause)
    node = await _lock_node(uow, p, node_id)
    _check_writable(node, expected_revision)
    new_spec = edited_spec(node, SpecEdit(clients, overrides, resources, storage, rollout, spec))
    if new_spec.to_wire() == node.spec:
        return node
    executor = await uow.session.get(Executor, node.executor_id)
    assert executor is not None
    check_edit(spec_of(node), new_spec, executor)
    actor = actor_of(p)
    changed = [c.path for c in spec_diff(node.spec, new_spec.to_wire())]
    await _write_revision(
        uow,
        node,
        new_spec,
        actor,
        cause or "configuration updated",
        lambda: record_event(
            uow.session,
            organization_id=node.organization_id,
            type="node.updated",
            message=f"{actor.label} updated {node.name} (revision {node.revision}: "
            f"{len(changed)} change{'' if len(changed) == 1 else 's'})",
            actor=actor,
            node=node,
            payload={"revision": node.revision, "changed": changed},
        ),
    )
    return node


async def rollback_node(
    uow: UnitOfWork,
    principal: Principal | None,
    node_id: UUID,
    *,
    to_revision: int,
    expected_revision: int | None = None,
    desired_state: DesiredState | None = None,
) -> Node:
    """Write a new revision whose spec is revision `to_revision`'s, so history only grows.

    The desired state and restart generation stay as they are now (unless `desired_state` is
    given: lifecycle is not history to undo), and storage never shrinks: a volume that has grown
    since keeps its size. No difference from the current spec writes nothing.
    """
    p = require_mutator(principal)
    node = await _lock_node(uow, p, node_id)
    _check_writable(node, expected_revision)
    target_row = await uow.session.scalar(
        select(SpecRevision).where(
            SpecRevision.node_id == node.id,
            SpecRevision.organization_id == node.organization_id,
            SpecRevision.revision == to_revision,
        )
    )
    if target_row is None:
        raise DomainError(
            ErrorCode.NOT_FOUND,
            f"node {node.name!r} has no revision {to_revision}",
            field="toRevision",
        )
    current = spec_of(node)
    new_spec = rolled_back_spec(current, parse_spec(target_row.spec), desired_state)
    if new_spec.to_wire() == node.spec:
        return node
    executor = await uow.session.get(Executor, node.executor_id)
    assert executor is not None
    check_edit(current, new_spec, executor)
    actor = actor_of(p)
    changed = [c.path for c in spec_diff(node.spec, new_spec.to_wire())]
    await _write_revision(
        uow,
        node,
        new_spec,
        actor,
        ROLLBACK_CAUSE,
        lambda: record_event(
            uow.session,
            organization_id=node.organization_id,
            type="node.rolled_back",
            message=f"{actor.label} rolled {node.name} back to revision {to_revision} "
            f"(revision {node.revision})",
            actor=actor,
            node=node,
            payload={"revision": node.revision, "toRevision": to_revision, "changed": changed},
        ),
    )
    return node


def rolled_back_spec(
    current: NodeSpec, target: NodeSpec, desired_state: DesiredState | None = None
) -> NodeSpec:
    """`target` with the current desired state (or `desired_state`), restart generation and,
    where it is larger, storage size."""
    storage = target.storage
    if quantity_value(current.storage.size) > quantity_value(storage.size):
        storage = storage.model_copy(update={"size": current.storage.size})
    return target.model_copy(
        update={
            "desired_state": desired_state or current.desired_state,
            "restart_generation": current.restart_generation,
            "storage": storage,
        }
    )


def auto_rollback_target(node: Node) -> int | None:
    """The revision to go back to by itself, or None: the node's spec asks for autoRollback,
    its executor reports an apply error for the current revision (it failed to apply or to
    become healthy within its window), and names an earlier revision it last saw healthy."""
    if node.deleted_at is not None or not node.spec.get("rollout", {}).get("autoRollback"):
        return None
    observed = observed_of(node)
    if observed is None or observed.revision != node.revision or observed.apply_error is None:
        return None
    healthy = observed.healthy_revision
    if healthy is None or healthy >= node.revision:
        return None
    return healthy


async def auto_rollback(uow: UnitOfWork, node: Node, actor: Actor = SYSTEM) -> bool:
    """Roll `node` back to the revision its executor last saw healthy, if `auto_rollback_target`
    says so; True when a revision was written.

    Called under the node's row lock in the transaction that stores the observation: the check
    reads the revision the write replaces, so two syncs (or a sync and an edit) never roll back
    twice, and once written the failure is of an older revision and does not fire again.
    """
    target = auto_rollback_target(node)
    if target is None:
        return False
    observed = observed_of(node)
    assert observed is not None and observed.apply_error is not None
    reason = observed.apply_error
    failed = node.revision
    row = await uow.session.scalar(
        select(SpecRevision).where(SpecRevision.node_id == node.id, SpecRevision.revision == target)
    )
    executor = await uow.session.get(Executor, node.executor_id)
    if row is None or executor is None:
        return False
    current = spec_of(node)
    try:
        new_spec = rolled_back_spec(current, parse_spec(row.spec))
        if new_spec.to_wire() == node.spec:
            return False
        check_edit(current, new_spec, executor)
    except DomainError as exc:
        await record_event(
            uow.session,
            organization_id=node.organization_id,
            type="node.auto_rollback.refused",
            level=EventLevel.ERROR,
            message=f"{node.name}: revision {failed} failed ({reason}); cannot roll back to "
            f"revision {target}: {exc.message}",
            actor=actor,
            node=node,
            payload={"revision": failed, "toRevision": target, "reason": reason},
        )
        return False
    await _write_revision(
        uow,
        node,
        new_spec,
        actor,
        AUTO_ROLLBACK_CAUSE,
        lambda: record_event(
            uow.session,
            organization_id=node.organization_id,
            type="node.auto_rolled_back",
            level=EventLevel.WARN,
            message=f"{node.name}: revision {failed} failed ({reason}); rolled back to revision "
            f"{target} as revision {node.revision}",
            actor=actor,
            node=node,
            payload={
                "revision": node.revision,
                "failedRevision": failed,
                "toRevision": target,
                "reason": reason,
            },
        ),
    )
    return True


async def request_lifecycle_action(
    uow: UnitOfWork,
    principal: Principal | None,
    node_id: UUID,
    action: LifecycleAction,
    *,
    expected_revision: int | None = None,
) -> Node:
    """Start, stop or restart by changing desired state; asking for the current one is a no-op."""
    p = require_mutator(principal)
    node = await _lock_node(uow, p, node_id)
    _check_writable(node, expected_revision)
    spec = spec_of(node)
    if action is LifecycleAction.RESTART:
        if spec.desired_state is DesiredState.STOPPED:
            raise DomainError(
                ErrorCode.INVALID_ACTION, f"node {node.name!r} is stopped: start it instead"
            )
        new_spec = spec.model_copy(update={"restart_generation": spec.restart_generation + 1})
    else:
        target = DesiredState.RUNNING if action is LifecycleAction.START else DesiredState.STOPPED
        if spec.desired_state is target:
            return node
        new_spec = spec.model_copy(update={"desired_state": target})
    actor = actor_of(p)
    await _write_revision(
        uow,
        node,
        new_spec,
        actor,
        f"lifecycle: {action.value}",
        lambda: record_event(
            uow.session,
            organization_id=node.organization_id,
            type="node.lifecycle.requested",
            message=f"{actor.label} requested {action.value} of {node.name}",
            actor=actor,
            node=node,
            payload={"action": action.value, "revision": node.revision},
        ),
    )
    return node


async def delete_node(
    uow: UnitOfWork, principal: Principal | None, node_id: UUID, *, retain_data: bool
) -> Node:
    """Tombstone a node; its executor tears it down and confirms, then the row goes."""
    p = require_mutator(principal)
    node = await _lock_node(uow, p, node_id)
    _check_writable(node, None)
    before = phase_of(node)
    actor = actor_of(p)
    node.deleted_at = utcnow()
    node.retain_data = retain_data
    await record_event(
        uow.session,
        organization_id=node.organization_id,
        type="node.deleted",
        message=f"{actor.label} deleted {node.name} "
        f"({'keeping' if retain_data else 'removing'} its data)",
        actor=actor,
        node=node,
        payload={"retainData": retain_data, "revision": node.revision},
    )
    await record_phase_change(uow.session, node, before, actor)
    # A new desired state or a delete may clear (or, on a start, not yet open) an incident.
    await alerts.evaluate_nodes(uow.session, [node], utcnow())
    uow.wake(node.executor_id)
    uow.nodes_changed(node.organization_id, [node.id])
    return node
