"""Alerts: rule evaluation, incident transitions, alert settings, incident listing.

Rules are pure (protocol/alerts.py); this module applies them to stored rows. Every incident
transition happens in `open_incident` / `resolve_incident`, inside the caller's transaction,
together with its `notification.alert.opened` / `.resolved` event (the hand-off point for
webhook delivery): an incident never changes without its event, nor the event without it.

When rules run:
- a sync whose observations changed (services/executors.py `_store_observations`), a spec write
  or a delete (services/nodes.py): the node rules for those nodes, in that transaction;
- the offline sweep (services/executors.py `sweep_offline_executors`): executor_offline, in the
  transaction that marks the executor disconnected; a reconnecting sync resolves it;
- the alert timer (`sweep_alerts`): sync_stalled, which becomes true by time passing alone (a
  steady heartbeat writes nothing, services/executors.py `unchanged_sync`);
- a change of settings: the changed rule for the nodes it touches.

One open incident per (organization, rule, subject) is a database rule: `incidents.open_key` is
unique per organization and set only while open, and opening is an INSERT ... ON CONFLICT DO
NOTHING, so of several processes or replicas evaluating at once exactly one opens it, and
resolving is a conditional UPDATE, so exactly one resolves it.
"""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

import structlog
from sqlalchemy import (
    Boolean,
    Float,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.auth.principal import Principal, require_mutator, require_principal
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.services.actors import SYSTEM, Actor, actor_of
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.services.loop_turns import in_steps
from nodeplane.controlplane.services.node_facts import AlertedNode, NamedNode
from nodeplane.controlplane.services.webhooks import enqueue_webhook_deliveries
from nodeplane.controlplane.store.database import Database, UnitOfWork, dialect_insert
from nodeplane.controlplane.store.models import AlertSetting, Executor, Incident, Node
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import DesiredState, EventLevel, ObservedNodeState
from nodeplane.protocol.alerts import (
    ALERT_OPENED_EVENT,
    ALERT_RESOLVED_EVENT,
    NODE_RULES,
    SEVERITY,
    SYNC_STALL_SECONDS,
    THRESHOLD_BOUNDS,
    AlertRule,
    AlertSeverity,
    Effective,
    Finding,
    SubjectKind,
    default_threshold,
    disk_usage,
    effective,
    executor_offline,
    marks_since,
    next_marks,
    node_down,
    node_down_undecided,
    sync_stalled,
    threshold_problem,
)
from nodeplane.protocol.observed import stored_observation

log = structlog.get_logger(__name__)

OPENED = ALERT_OPENED_EVENT
RESOLVED = ALERT_RESOLVED_EVENT
ORG_SCOPE = "org"
MAX_PAGE = 200


# ---- incident transitions ------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What an incident is about, with the names its event carries."""

    kind: SubjectKind
    id: UUID
    name: str
    organization_id: UUID
    executor_id: UUID | None
    executor_name: str | None
    node: NamedNode | None = None


def node_subject(node: AlertedNode, executor_name: str | None) -> Subject:
    return Subject(
        SubjectKind.NODE,
        node.id,
        node.name,
        node.organization_id,
        node.executor_id,
        executor_name,
        node,
    )


def _open_key(rule: AlertRule, subject_id: UUID) -> str:
    return f"{rule.value}:{subject_id}"


def event_payload(incident: Incident, executor_name: str | None) -> dict[str, Any]:
    """The payload of `notification.alert.opened` / `.resolved`: the whole incident, so a
    webhook needs nothing else to describe it."""
    node = incident.subject_kind == SubjectKind.NODE.value
    return {
        "incidentId": str(incident.id),
        "rule": incident.rule,
        "severity": incident.severity,
        "state": "resolved" if incident.resolved_at is not None else "open",
        "subject": {
            "kind": incident.subject_kind,
            "id": str(incident.subject_id),
            "name": incident.subject_name,
        },
        "nodeId": str(incident.node_id) if incident.node_id else None,
        "nodeName": incident.subject_name if node else None,
        "executorId": str(incident.executor_id) if incident.executor_id else None,
        "executorName": executor_name,
        "message": incident.message,
        "value": incident.value,
        "threshold": incident.threshold,
        "details": incident.details,
        "openedAt": incident.opened_at.isoformat(),
        "resolvedAt": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "resolution": incident.resolution,
    }


async def open_incident(
    session: AsyncSession,
    rule: AlertRule,
    subject: Subject,
    finding: Finding,
    now: datetime,
    actor: Actor = SYSTEM,
) -> Incident | None:
    """Open an incident for (rule, subject) and record `notification.alert.opened`, in the
    caller's transaction; None when one is already open (here or in a concurrent transaction,
    whose commit this waits for on PostgreSQL)."""
    severity = SEVERITY[rule]
    values = {
        "organization_id": subject.organization_id,
        "rule": rule.value,
        "severity": severity.value,
        "subject_kind": subject.kind.value,
        "subject_id": subject.id,
        "subject_name": subject.name,
        "node_id": subject.id if subject.kind is SubjectKind.NODE else None,
        "executor_id": subject.executor_id,
        "message": finding.message,
        "value": finding.value,
        "threshold": finding.threshold,
        "details": finding.details,
        "open_key": _open_key(rule, subject.id),
        "opened_at": now,
    }
    inserted = await session.execute(
        dialect_insert(session, Incident)
        .values(id=uuid.uuid4(), **values)
        .on_conflict_do_nothing()
        .returning(Incident.id)
    )
    incident_id = inserted.scalar()
    if incident_id is None:
        return None
    incident = Incident(id=incident_id, resolved_at=None, resolution=None, **values)
    event = await record_event(
        session,
        organization_id=subject.organization_id,
        type=OPENED,
        level=EventLevel.ERROR if severity is AlertSeverity.CRITICAL else EventLevel.WARN,
        message=f"{rule.value} opened: {finding.message}",
        actor=actor,
        node=subject.node,
        executor_id=subject.executor_id,
        payload=event_payload(incident, subject.executor_name),
    )
    # Webhooks: an outbox row per subscribed endpoint, committed with the incident or not at all.
    await enqueue_webhook_deliveries(session, organization_id=subject.organization_id, event=event)
    log.info("alert.opened", rule=rule.value, subject=subject.name, incident=str(incident_id))
    return incident


async def resolve_incident(
    session: AsyncSession,
    rule: AlertRule,
    subject: Subject,
    now: datetime,
    resolution: str,
    actor: Actor = SYSTEM,
) -> Incident | None:
    """Resolve the open incident of (rule, subject), if any, and record
    `notification.alert.resolved` in the caller's transaction; None when none was open."""
    row = (
        await session.execute(
            update(Incident)
            .where(
                Incident.organization_id == subject.organization_id,
                Incident.open_key == _open_key(rule, subject.id),
            )
            .values(open_key=None, resolved_at=now, resolution=resolution)
            .returning(*Incident.__table__.columns)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if row is None:
        return None
    incident = Incident(**row._mapping)
    event = await record_event(
        session,
        organization_id=subject.organization_id,
        type=RESOLVED,
        level=EventLevel.INFO,
        message=f"{rule.value} resolved: {subject.name} ({resolution})",
        actor=actor,
        node=subject.node,
        executor_id=subject.executor_id,
        payload=event_payload(incident, subject.executor_name),
    )
    await enqueue_webhook_deliveries(session, organization_id=subject.organization_id, event=event)
    log.info("alert.resolved", rule=rule.value, subject=subject.name, incident=str(incident.id))
    return incident


# ---- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSetting:
    """A rule's stored setting (a default or an override); None inherits."""

    enabled: bool | None
    threshold: float | None


@dataclass
class SettingsView:
    """An organization's stored defaults and the overrides of some of its nodes."""

    org: dict[AlertRule, StoredSetting]
    nodes: dict[tuple[UUID, AlertRule], StoredSetting]

    def add(self, node_id: UUID | None, rule_name: str, setting: StoredSetting) -> None:
        """Take one stored row (rules this version does not know are left out)."""
        try:
            rule = AlertRule(rule_name)
        except ValueError:
            return
        if node_id is None:
            self.org[rule] = setting
        else:
            self.nodes[(node_id, rule)] = setting

    def effective(self, rule: AlertRule, chain: str | None, node_id: UUID | None) -> Effective:
        org = self.org.get(rule)
        over = self.nodes.get((node_id, rule)) if node_id is not None else None
        return effective(
            rule,
            chain,
            (org.enabled, org.threshold) if org else None,
            (over.enabled, over.threshold) if over else None,
        )


# Built once: a sync that changes observations reads these (the statements' construction cost
# the server more than PostgreSQL took to answer them).
_SETTINGS = cast(Table, AlertSetting.__table__)
_INCIDENTS = cast(Table, Incident.__table__)
_SETTING_ROWS = select(
    literal_column("'setting'").label("kind"),
    _SETTINGS.c.node_id,
    _SETTINGS.c.rule,
    _SETTINGS.c.enabled,
    _SETTINGS.c.threshold,
)
_ORG_SETTINGS = _SETTING_ROWS.where(
    _SETTINGS.c.organization_id == bindparam("organization_id"), _SETTINGS.c.scope == ORG_SCOPE
)
_ORG_AND_NODE_SETTINGS = _SETTING_ROWS.where(
    _SETTINGS.c.organization_id == bindparam("organization_id"),
    or_(
        _SETTINGS.c.scope == ORG_SCOPE,
        _SETTINGS.c.node_id.in_(bindparam("node_ids", expanding=True)),
    ),
)
_OPEN_CONDITIONS = (
    _INCIDENTS.c.node_id.in_(bindparam("node_ids", expanding=True)),
    _INCIDENTS.c.open_key.is_not(None),
    _INCIDENTS.c.rule.in_(bindparam("rules", expanding=True)),
)
_OPEN_NODE_RULES = select(_INCIDENTS.c.node_id, _INCIDENTS.c.rule).where(*_OPEN_CONDITIONS)
# Both for nodes of one organization (every sync's): one round trip instead of two.
_SETTINGS_AND_OPEN_RULES = union_all(
    _ORG_AND_NODE_SETTINGS,
    select(
        literal_column("'open'"),
        _INCIDENTS.c.node_id,
        _INCIDENTS.c.rule,
        cast_(null(), Boolean),
        cast_(null(), Float),
    ).where(*_OPEN_CONDITIONS),
)


async def load_settings(
    session: AsyncSession, organization_id: UUID, node_ids: Iterable[UUID] = ()
) -> SettingsView:
    """The organization's defaults and the overrides of `node_ids`, in one query."""
    ids = list(node_ids)
    params: dict[str, Any] = {"organization_id": organization_id}
    if ids:
        params["node_ids"] = ids
    view = SettingsView({}, {})
    for row in await session.execute(_ORG_AND_NODE_SETTINGS if ids else _ORG_SETTINGS, params):
        view.add(row.node_id, row.rule, StoredSetting(row.enabled, row.threshold))
    return view


async def _settings_and_open_rules(
    session: AsyncSession, organization_id: UUID, node_ids: list[UUID], rules: Sequence[AlertRule]
) -> tuple[SettingsView, set[tuple[UUID, AlertRule]]]:
    """`load_settings` and `open_node_rules` for nodes of one organization, in one query."""
    view = SettingsView({}, {})
    opened: set[tuple[UUID, AlertRule]] = set()
    params = {
        "organization_id": organization_id,
        "node_ids": node_ids,
        "rules": [r.value for r in rules],
    }
    for row in await session.execute(_SETTINGS_AND_OPEN_RULES, params):
        if row.kind == "open":
            opened.add((row.node_id, AlertRule(row.rule)))
        else:
            view.add(row.node_id, row.rule, StoredSetting(row.enabled, row.threshold))
    return view, opened


# ---- node rules ----------------------------------------------------------------------------


def _desired(node: AlertedNode) -> DesiredState:
    try:
        return DesiredState(node.desired_state or DesiredState.RUNNING.value)
    except ValueError:
        return DesiredState.RUNNING


def marks_after(
    node: AlertedNode, observed: ObservedNodeState | None, now: datetime
) -> tuple[dict[str, Any], datetime | None]:
    """The node's height marks and their oldest time once `observed` is stored on it at `now`."""
    marks = next_marks(node.height_marks, observed, now)
    if marks == node.height_marks:
        return marks, node.heights_since
    return marks, marks_since(marks)


def move_marks(node: Node, now: datetime) -> None:
    """Move the node's height marks for the observation just stored on it (write path only)."""
    marks, since = marks_after(node, stored_observation(node.observed), now)
    if marks != node.height_marks:
        node.height_marks = marks
        node.heights_since = since


def node_findings(
    node: AlertedNode,
    view: SettingsView,
    now: datetime,
    rules: Sequence[AlertRule] = NODE_RULES,
    observed: ObservedNodeState | None = None,
) -> dict[AlertRule, Finding | None]:
    """Each of `rules` for `node`: the finding when its condition holds and it is enabled.
    `observed`: the node's stored observation as a model, when the caller has it."""
    if observed is None:
        observed = stored_observation(node.observed)
    deleted = node.deleted_at is not None
    desired = _desired(node)
    out: dict[AlertRule, Finding | None] = {}
    for rule in rules:
        setting = view.effective(rule, node.chain, node.id)
        finding: Finding | None = None
        if setting.enabled:
            if rule is AlertRule.NODE_DOWN:
                finding = node_down(node.name, desired, node.revision, deleted, observed)
            elif rule is AlertRule.DISK_USAGE:
                finding = disk_usage(node.name, deleted, observed, setting.threshold)
            elif rule is AlertRule.SYNC_STALLED:
                finding = sync_stalled(
                    node.name,
                    node.network,
                    desired,
                    deleted,
                    observed,
                    node.height_marks,
                    setting.threshold,
                    now,
                )
        out[rule] = finding
    return out


def _resolution(node: AlertedNode, rule: AlertRule, view: SettingsView) -> str:
    if node.deleted_at is not None:
        return "node deleted"
    if not view.effective(rule, node.chain, node.id).enabled:
        return "rule disabled"
    if rule is AlertRule.NODE_DOWN and _desired(node) is DesiredState.STOPPED:
        return "node stopped on purpose"
    return "condition cleared"


async def open_node_rules(
    session: AsyncSession, node_ids: Sequence[UUID], rules: Sequence[AlertRule] = NODE_RULES
) -> set[tuple[UUID, AlertRule]]:
    """(node, rule) of the incidents open for these nodes."""
    if not node_ids:
        return set()
    rows = await session.execute(
        _OPEN_NODE_RULES, {"node_ids": list(node_ids), "rules": [r.value for r in rules]}
    )
    return {(node_id, AlertRule(rule)) for node_id, rule in rows if node_id is not None}


async def evaluate_nodes(
    session: AsyncSession,
    nodes: Sequence[AlertedNode],
    now: datetime,
    *,
    executor_names: dict[UUID, str] | None = None,
    rules: Sequence[AlertRule] = NODE_RULES,
    actor: Actor = SYSTEM,
    observations: Mapping[UUID, ObservedNodeState] | None = None,
) -> int:
    """Open and resolve the node rules' incidents of `nodes` (rows as just written, in the
    caller's transaction). Returns how many incidents changed. Two queries when nothing does.
    `observations`: nodes' stored observations as models, where the caller has them (a sync
    has just validated what it stored), so they are not validated again."""
    if not nodes:
        return 0
    by_org: dict[UUID, list[AlertedNode]] = {}
    for node in nodes:
        by_org.setdefault(node.organization_id, []).append(node)
    views: dict[UUID, SettingsView] = {}
    if len(by_org) == 1:
        [(organization_id, members)] = by_org.items()
        ids = [n.id for n in members]
        views[organization_id], opened = await _settings_and_open_rules(
            session, organization_id, ids, rules
        )
    else:
        opened = await open_node_rules(session, [n.id for n in nodes], rules)
    names = dict(executor_names or {})
    changed = 0
    for organization_id, members in by_org.items():
        view = views.get(organization_id) or await load_settings(
            session, organization_id, [n.id for n in members]
        )
        async for node in in_steps(members):
            observed = observations.get(node.id) if observations else None
            for rule, finding in node_findings(node, view, now, rules, observed).items():
                is_open = (node.id, rule) in opened
                if (finding is not None) == is_open:
                    continue
                # While a revision is applied node_down waits, unless the rule was turned off.
                enabled = view.effective(rule, node.chain, node.id).enabled
                if (
                    enabled
                    and rule is AlertRule.NODE_DOWN
                    and node_down_undecided(
                        _desired(node),
                        node.revision,
                        node.deleted_at is not None,
                        stored_observation(node.observed),
                    )
                ):
                    continue
                if node.executor_id not in names:
                    names[node.executor_id] = await _executor_name(session, node.executor_id)
                subject = node_subject(node, names[node.executor_id])
                if finding is not None:
                    done = await open_incident(session, rule, subject, finding, now, actor)
                else:
                    done = await resolve_incident(
                        session, rule, subject, now, _resolution(node, rule, view), actor
                    )
                changed += done is not None
    return changed


async def _executor_name(session: AsyncSession, executor_id: UUID) -> str:
    return (await session.scalar(select(Executor.name).where(Executor.id == executor_id))) or ""


# ---- executor rule -----------------------------------------------------------------------


def executor_subject(executor: Executor) -> Subject:
    return Subject(
        SubjectKind.EXECUTOR,
        executor.id,
        executor.name,
        executor.organization_id,
        executor.id,
        executor.name,
    )


async def executor_went_offline(
    session: AsyncSession,
    organization_id: UUID,
    executor_id: UUID,
    name: str,
    last_sync_at: datetime | None,
    node_count: int,
    now: datetime,
) -> Incident | None:
    """executor_offline for an executor just marked disconnected (in that transaction)."""
    if node_count == 0:
        return None
    view = await load_settings(session, organization_id)
    if not view.effective(AlertRule.EXECUTOR_OFFLINE, None, None).enabled:
        return None
    subject = Subject(SubjectKind.EXECUTOR, executor_id, name, organization_id, executor_id, name)
    finding = executor_offline(name, last_sync_at, node_count)
    return await open_incident(session, AlertRule.EXECUTOR_OFFLINE, subject, finding, now)


async def executor_came_back(session: AsyncSession, executor: Executor, now: datetime) -> None:
    """Resolve executor_offline for an executor that synced again (in the sync's transaction)."""
    await resolve_incident(
        session,
        AlertRule.EXECUTOR_OFFLINE,
        executor_subject(executor),
        now,
        "executor reconnected",
    )


# ---- the timer -----------------------------------------------------------------------------


async def _shortest_stall(session: AsyncSession) -> float:
    """The shortest stall time any node may have: the chain table's and configured ones."""
    configured = await session.scalar(
        select(func.min(AlertSetting.threshold)).where(
            AlertSetting.rule == AlertRule.SYNC_STALLED.value
        )
    )
    candidates = [*SYNC_STALL_SECONDS.values(), *(c for c in [configured] if c is not None)]
    low, _high, _ = THRESHOLD_BOUNDS[AlertRule.SYNC_STALLED]
    return max(low, min(candidates))


async def stall_candidates(
    session: AsyncSession, now: datetime
) -> tuple[list[Node], dict[UUID, SettingsView]]:
    """The nodes the stall rule must judge at `now`, with their organizations' settings: those
    with a stall open, and those whose height has stood still for their own stall time (the
    chain's, or as their organization or the node configures it) on an online executor.

    A first read takes a few columns of the nodes still since the shortest stall time of any
    node; each is then held against its own effective threshold, so that a fleet of chains
    with long block times (Bitcoin's stall time is an hour) is not loaded whole at every tick
    because Ethereum's is five minutes. Only the nodes left are read as rows."""
    stale_before = now - timedelta(seconds=await _shortest_stall(session))
    is_open = Node.id.in_(
        select(Incident.node_id).where(
            Incident.rule == AlertRule.SYNC_STALLED.value, Incident.open_key.is_not(None)
        )
    )
    rows = (
        await session.execute(
            select(
                Node.id, Node.organization_id, Node.chain, Node.heights_since, is_open.label("open")
            )
            .join(Executor, Executor.id == Node.executor_id)
            .where(
                Node.deleted_at.is_(None),
                or_(
                    and_(Node.heights_since <= stale_before, Executor.connected.is_(True)), is_open
                ),
            )
        )
    ).all()
    by_org: dict[UUID, list[Any]] = {}
    for row in rows:
        by_org.setdefault(row.organization_id, []).append(row)
    views: dict[UUID, SettingsView] = {}
    due: list[UUID] = []
    for organization_id, members in by_org.items():
        view = views[organization_id] = await load_settings(
            session, organization_id, [r.id for r in members]
        )
        for row in members:
            setting = view.effective(AlertRule.SYNC_STALLED, row.chain, row.id)
            still_long_enough = (
                setting.enabled
                and setting.threshold is not None
                and row.heights_since is not None
                and row.heights_since <= now - timedelta(seconds=setting.threshold)
            )
            if row.open or still_long_enough:
                due.append(row.id)
    if not due:
        return [], views
    return list((await session.scalars(select(Node).where(Node.id.in_(due)))).all()), views


async def sweep_alerts(db: Database) -> int:
    """The timer: sync_stalled for the nodes `stall_candidates` gives. Reads first; writes one
    short transaction per node whose incident must change. Safe on several processes and
    replicas."""
    now = utcnow()
    async with db.read() as session:
        candidates, views = await stall_candidates(session, now)
        if not candidates:
            return 0
        opened = await open_node_rules(
            session, [n.id for n in candidates], (AlertRule.SYNC_STALLED,)
        )
        due: list[UUID] = []
        for node in candidates:
            finding = node_findings(
                node, views[node.organization_id], now, (AlertRule.SYNC_STALLED,)
            )[AlertRule.SYNC_STALLED]
            if (finding is not None) != ((node.id, AlertRule.SYNC_STALLED) in opened):
                due.append(node.id)
    changed = 0
    for node_id in due:
        async with db.write() as uow:
            # Locked as every writer of a node locks it, so a sync changing its observation
            # now is judged before or after this, never interleaved.
            locked = await uow.session.scalar(
                select(Node).where(Node.id == node_id).with_for_update()
            )
            if locked is None:
                continue
            changed += await evaluate_nodes(
                uow.session, [locked], utcnow(), rules=(AlertRule.SYNC_STALLED,)
            )
    return changed


# ---- settings: reads and writes ------------------------------------------------------------


@dataclass(frozen=True)
class RuleSetting:
    """One rule's settings as the API shows them: effective values and where they come from."""

    rule: AlertRule
    enabled: bool
    threshold: float | None
    default_threshold: float | None
    threshold_meaning: str | None
    org_enabled: bool | None
    org_threshold: float | None
    node_enabled: bool | None
    node_threshold: float | None
    node_id: UUID | None


def _rule_settings(view: SettingsView, node: Node | None) -> list[RuleSetting]:
    rules = NODE_RULES if node is not None else tuple(AlertRule)
    out = []
    for rule in rules:
        chain = node.chain if node is not None else None
        eff = view.effective(rule, chain, node.id if node is not None else None)
        org = view.org.get(rule)
        over = view.nodes.get((node.id, rule)) if node is not None else None
        bounds = THRESHOLD_BOUNDS.get(rule)
        out.append(
            RuleSetting(
                rule=rule,
                enabled=eff.enabled,
                threshold=eff.threshold,
                default_threshold=default_threshold(rule, chain),
                threshold_meaning=bounds[2] if bounds else None,
                org_enabled=org.enabled if org else None,
                org_threshold=org.threshold if org else None,
                node_enabled=over.enabled if over else None,
                node_threshold=over.threshold if over else None,
                node_id=node.id if node is not None else None,
            )
        )
    return out


async def _scoped_node(session: AsyncSession, p: Principal, node_id: UUID) -> Node | None:
    query = select(Node).where(Node.id == node_id, Node.organization_id == p.organization_id)
    if p.is_executor:
        query = query.where(Node.executor_id == p.executor_id)
    node: Node | None = await session.scalar(query)
    return node


async def alert_settings(
    session: AsyncSession, principal: Principal | None, node_id: UUID | None = None
) -> list[RuleSetting] | None:
    """The organization's rule settings, or a node's (None for a node the caller cannot see)."""
    p = require_principal(principal)
    if p.organization_id is None:
        return [] if node_id is None else None
    node = None
    if node_id is not None:
        node = await _scoped_node(session, p, node_id)
        if node is None:
            return None
    view = await load_settings(session, p.organization_id, [node_id] if node_id else [])
    return _rule_settings(view, node)


def _check(rule: AlertRule, threshold: float | None) -> None:
    if problem := threshold_problem(rule, threshold):
        raise DomainError(ErrorCode.INVALID_INPUT, problem, field="threshold")


async def _upsert(
    session: AsyncSession,
    organization_id: UUID,
    node_id: UUID | None,
    rule: AlertRule,
    enabled: bool | None,
    threshold: float | None,
    actor: Actor,
) -> None:
    scope = ORG_SCOPE if node_id is None else str(node_id)
    row = await session.scalar(
        select(AlertSetting)
        .where(
            AlertSetting.organization_id == organization_id,
            AlertSetting.scope == scope,
            AlertSetting.rule == rule.value,
        )
        .with_for_update()
    )
    if node_id is not None and enabled is None and threshold is None:
        # Nothing left to override: the node inherits again.
        if row is not None:
            await session.delete(row)
        return
    if row is None:
        row = AlertSetting(
            organization_id=organization_id,
            scope=scope,
            node_id=node_id,
            rule=rule.value,
            updated_by=actor.label,
        )
        session.add(row)
    row.enabled = enabled
    row.threshold = threshold
    row.updated_by = actor.label
    row.updated_at = utcnow()
    await session.flush()


async def set_default(
    uow: UnitOfWork,
    principal: Principal | None,
    rule: AlertRule,
    enabled: bool,
    threshold: float | None,
) -> list[RuleSetting]:
    """Set the organization's default for `rule` (owners and admins); a None threshold means
    the built-in one. Open incidents are re-judged at once."""
    p = require_mutator(principal)
    assert p.organization_id is not None
    _check(rule, threshold)
    session = uow.session
    actor = actor_of(p)
    await _upsert(session, p.organization_id, None, rule, enabled, threshold, actor)
    await record_event(
        session,
        organization_id=p.organization_id,
        type="alert.settings.changed",
        message=f"{actor.label} set {rule.value} for the organization: "
        f"{'enabled' if enabled else 'disabled'}"
        + (f", threshold {threshold:g}" if threshold is not None else ""),
        actor=actor,
        payload={"rule": rule.value, "enabled": enabled, "threshold": threshold, "nodeId": None},
    )
    await _reevaluate(session, p.organization_id, rule, None)
    view = await load_settings(session, p.organization_id)
    return _rule_settings(view, None)


async def set_node_override(
    uow: UnitOfWork,
    principal: Principal | None,
    node_id: UUID,
    rule: AlertRule,
    enabled: bool | None,
    threshold: float | None,
) -> list[RuleSetting]:
    """Override `rule` for one node (owners and admins); None fields inherit, and both None
    removes the override. Its incident is re-judged at once."""
    p = require_mutator(principal)
    assert p.organization_id is not None
    if rule not in NODE_RULES:
        raise DomainError(
            ErrorCode.INVALID_INPUT, f"{rule.value} is not a rule about a node", field="rule"
        )
    _check(rule, threshold)
    session = uow.session
    node = await _scoped_node(session, p, node_id)
    if node is None:
        raise DomainError(ErrorCode.NOT_FOUND, "node not found", field="nodeId")
    actor = actor_of(p)
    await _upsert(session, p.organization_id, node.id, rule, enabled, threshold, actor)
    await record_event(
        session,
        organization_id=p.organization_id,
        type="alert.settings.changed",
        message=f"{actor.label} set {rule.value} for {node.name}: "
        + (
            "inherits the organization's settings"
            if enabled is None and threshold is None
            else ", ".join(
                part
                for part in (
                    None if enabled is None else ("enabled" if enabled else "disabled"),
                    None if threshold is None else f"threshold {threshold:g}",
                )
                if part
            )
        ),
        actor=actor,
        node=node,
        payload={
            "rule": rule.value,
            "enabled": enabled,
            "threshold": threshold,
            "nodeId": str(node.id),
        },
    )
    await _reevaluate(session, p.organization_id, rule, node.id)
    view = await load_settings(session, p.organization_id, [node.id])
    return _rule_settings(view, node)


async def _reevaluate(
    session: AsyncSession, organization_id: UUID, rule: AlertRule, node_id: UUID | None
) -> None:
    """Judge `rule` again for the nodes a settings change touches (all live nodes of the
    organization for a default, locked in id order as every node writer locks them)."""
    if rule is AlertRule.EXECUTOR_OFFLINE:
        await _reevaluate_executors(session, organization_id)
        return
    query = select(Node).where(Node.organization_id == organization_id, Node.deleted_at.is_(None))
    if node_id is not None:
        query = query.where(Node.id == node_id)
    nodes = list((await session.scalars(query.order_by(Node.id).with_for_update())).all())
    await evaluate_nodes(session, nodes, utcnow(), rules=(rule,))


async def _reevaluate_executors(session: AsyncSession, organization_id: UUID) -> None:
    """executor_offline after its default changed: resolved everywhere when disabled; opened
    for executors already marked offline with nodes when enabled (the sweep marks each only
    once, so it would not come back to them)."""
    view = await load_settings(session, organization_id)
    now = utcnow()
    if not view.effective(AlertRule.EXECUTOR_OFFLINE, None, None).enabled:
        for executor in await session.scalars(
            select(Executor).where(
                Executor.id.in_(
                    select(Incident.subject_id).where(
                        Incident.organization_id == organization_id,
                        Incident.rule == AlertRule.EXECUTOR_OFFLINE.value,
                        Incident.open_key.is_not(None),
                    )
                )
            )
        ):
            await resolve_incident(
                session,
                AlertRule.EXECUTOR_OFFLINE,
                executor_subject(executor),
                now,
                "rule disabled",
            )
        return
    offline = await session.execute(
        select(Executor, func.count(Node.id))
        .join(Node, Node.executor_id == Executor.id)
        .where(Executor.organization_id == organization_id, Executor.connected.is_(False))
        .group_by(Executor.id)
        .order_by(Executor.id)
    )
    for executor, node_count in offline:
        await executor_went_offline(
            session,
            organization_id,
            executor.id,
            executor.name,
            executor.last_sync_at,
            node_count,
            now,
        )


async def forget_node(session: AsyncSession, node_id: UUID) -> None:
    """Drop a removed node's overrides (its incidents stay, as history)."""
    await session.execute(delete(AlertSetting).where(AlertSetting.node_id == node_id))


# ---- incidents: reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentFilter:
    """Which incidents to list: state "open", "resolved" or None for both."""

    state: str | None = None
    node_id: UUID | None = None
    rule: AlertRule | None = None


@dataclass(frozen=True)
class IncidentPage:
    items: list[Incident]
    end_cursor: str | None
    has_next_page: bool


def _scoped_incidents(p: Principal) -> Any:
    query = select(Incident).where(Incident.organization_id == p.organization_id)
    if p.is_executor:
        query = query.where(Incident.executor_id == p.executor_id)
    return query


def _decode(after: str) -> tuple[datetime, UUID] | None:
    when, _, ident = after.partition("|")
    try:
        return datetime.fromisoformat(when), UUID(ident)
    except ValueError:
        return None


async def list_incidents(
    session: AsyncSession,
    principal: Principal | None,
    flt: IncidentFilter,
    *,
    first: int = 50,
    after: str | None = None,
) -> IncidentPage:
    """Incidents of the caller's organization, newest opened first, keyset-paginated."""
    p = require_principal(principal)
    if p.organization_id is None:
        return IncidentPage([], None, False)
    first = max(1, min(first, MAX_PAGE))
    query = _scoped_incidents(p)
    if flt.state == "open":
        query = query.where(Incident.open_key.is_not(None))
    elif flt.state == "resolved":
        query = query.where(Incident.open_key.is_(None))
    if flt.node_id is not None:
        query = query.where(Incident.node_id == flt.node_id)
    if flt.rule is not None:
        query = query.where(Incident.rule == flt.rule.value)
    if after:
        cursor = _decode(after)
        if cursor is None or len(after) > 100:
            raise DomainError(ErrorCode.INVALID_INPUT, "after is not a cursor", field="after")
        when, ident = cursor
        query = query.where(
            or_(Incident.opened_at < when, and_(Incident.opened_at == when, Incident.id < ident))
        )
    rows = list(
        (
            await session.scalars(
                query.order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(first + 1)
            )
        ).all()
    )
    has_next = len(rows) > first
    rows = rows[:first]
    end = f"{rows[-1].opened_at.isoformat()}|{rows[-1].id}" if rows else None
    return IncidentPage(rows, end, has_next)


async def count_open(session: AsyncSession, principal: Principal | None) -> int:
    """How many incidents of the caller's organization are open."""
    p = require_principal(principal)
    if p.organization_id is None:
        return 0
    query = select(func.count()).select_from(
        _scoped_incidents(p).where(Incident.open_key.is_not(None)).subquery()
    )
    return int(await session.scalar(query) or 0)


async def get_incident(
    session: AsyncSession, principal: Principal | None, incident_id: UUID
) -> Incident | None:
    """One incident, if the caller may see it."""
    p = require_principal(principal)
    if p.organization_id is None:
        return None
    incident: Incident | None = await session.scalar(
        _scoped_incidents(p).where(Incident.id == incident_id)
    )
    return incident
