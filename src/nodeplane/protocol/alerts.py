"""Alert rules: their names, defaults, per-chain stall times and the pure conditions.

The control plane evaluates these against stored observations (services/alerts.py); the CLI
and the UI name rules by the same values. Nothing here does I/O: each condition is a function of
a node's spec facts and observation (or an executor's silence) and the effective settings.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from nodeplane.protocol.enums import DesiredState, ProcessStatus
from nodeplane.protocol.observed import ObservedNodeState

# The events every incident transition is recorded as (services/alerts.py); what webhooks send.
ALERT_OPENED_EVENT = "notification.alert.opened"
ALERT_RESOLVED_EVENT = "notification.alert.resolved"


class AlertRule(StrEnum):
    """What an incident is about."""

    NODE_DOWN = "node_down"
    DISK_USAGE = "disk_usage"
    SYNC_STALLED = "sync_stalled"
    EXECUTOR_OFFLINE = "executor_offline"


class AlertSeverity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class SubjectKind(StrEnum):
    NODE = "node"
    EXECUTOR = "executor"


SEVERITY = {
    AlertRule.NODE_DOWN: AlertSeverity.CRITICAL,
    AlertRule.DISK_USAGE: AlertSeverity.WARNING,
    AlertRule.SYNC_STALLED: AlertSeverity.WARNING,
    AlertRule.EXECUTOR_OFFLINE: AlertSeverity.CRITICAL,
}

# Rules about one node (per-node overrides allowed); executor_offline is about an executor.
NODE_RULES = (AlertRule.NODE_DOWN, AlertRule.DISK_USAGE, AlertRule.SYNC_STALLED)
# The node rules that read metric values (protocol/observed.py METRIC_FIELDS): an observation
# whose metric values alone moved can change only these. node_down reads statuses, revisions
# and errors.
METRIC_RULES = (AlertRule.DISK_USAGE, AlertRule.SYNC_STALLED)

DEFAULT_DISK_USAGE_PERCENT = 85.0

# How long a chain's height may stay put before a node counts as stalled: a few times the
# chain's block interval, so ordinary variance in block times never trips it (bitcoin 10 min,
# litecoin 2.5 min, dogecoin 1 min, ethereum 12 s slots). A chain not listed gets the fallback.
SYNC_STALL_SECONDS: dict[str, float] = {
    "bitcoin": 60 * 60.0,
    "litecoin": 20 * 60.0,
    "dogecoin": 10 * 60.0,
    "ethereum": 5 * 60.0,
}
DEFAULT_SYNC_STALL_SECONDS = 30 * 60.0

# What a threshold means per rule, and its bounds; rules without one take none.
THRESHOLD_BOUNDS: dict[AlertRule, tuple[float, float, str]] = {
    AlertRule.DISK_USAGE: (1.0, 100.0, "percent of the disk used"),
    AlertRule.SYNC_STALLED: (5.0, 7 * 24 * 3600.0, "seconds without a new block"),
}


def stall_seconds(chain: str) -> float:
    """The default stall time of `chain`."""
    return SYNC_STALL_SECONDS.get(chain, DEFAULT_SYNC_STALL_SECONDS)


def default_threshold(rule: AlertRule, chain: str | None = None) -> float | None:
    """The built-in threshold of `rule` (for sync_stalled, of `chain`)."""
    if rule is AlertRule.DISK_USAGE:
        return DEFAULT_DISK_USAGE_PERCENT
    if rule is AlertRule.SYNC_STALLED:
        return stall_seconds(chain) if chain is not None else None
    return None


def threshold_problem(rule: AlertRule, threshold: float | None) -> str | None:
    """Why `threshold` cannot be `rule`'s threshold, or None."""
    if threshold is None:
        return None
    bounds = THRESHOLD_BOUNDS.get(rule)
    if bounds is None:
        return f"{rule.value} takes no threshold"
    low, high, meaning = bounds
    if not low <= threshold <= high:
        return f"{rule.value} threshold ({meaning}) must be between {low:g} and {high:g}"
    return None


@dataclass(frozen=True)
class Effective:
    """A rule's settings for one subject after the organization default and node override."""

    enabled: bool
    threshold: float | None


def effective(
    rule: AlertRule,
    chain: str | None,
    org: tuple[bool | None, float | None] | None,
    node: tuple[bool | None, float | None] | None,
) -> Effective:
    """The node override wins over the organization default, which wins over the built-in;
    a None field in either inherits."""
    enabled, threshold = True, default_threshold(rule, chain)
    for layer in (org, node):
        if layer is None:
            continue
        if layer[0] is not None:
            enabled = layer[0]
        if layer[1] is not None:
            threshold = layer[1]
    return Effective(enabled, threshold)


@dataclass(frozen=True)
class Finding:
    """A rule's condition holds: what tripped it, the threshold and a sentence for humans."""

    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any]


def node_down(
    name: str,
    desired: DesiredState,
    revision: int,
    deleted: bool,
    observed: ObservedNodeState | None,
) -> Finding | None:
    """Desired running and a process observed stopped or error, once the executor has applied
    the current revision (during a (re)configuration processes stop on purpose)."""
    if deleted or desired is not DesiredState.RUNNING or observed is None:
        return None
    if observed.revision < revision:
        return None
    down = [
        p for p in observed.processes if p.status in (ProcessStatus.STOPPED, ProcessStatus.ERROR)
    ]
    if not down:
        return None
    roles = ", ".join(f"{p.role} {p.status.value}" for p in down)
    return Finding(
        value=float(len(down)),
        threshold=None,
        message=f"{name} is down: {roles}",
        details={"processes": {p.role: p.status.value for p in down}},
    )


def node_down_undecided(
    desired: DesiredState, revision: int, deleted: bool, observed: ObservedNodeState | None
) -> bool:
    """While the executor applies a new revision of a node meant to run, its processes stop and
    start on purpose: node_down neither opens nor resolves until it reports that revision."""
    return (
        not deleted
        and desired is DesiredState.RUNNING
        and observed is not None
        and observed.revision < revision
    )


def disk_used_percent(observed: ObservedNodeState | None) -> tuple[float, str] | None:
    """The fullest disk among the node's processes (percent used, role), or None unknown."""
    worst: tuple[float, str] | None = None
    for p in observed.processes if observed is not None else []:
        total, available = p.disk_total_bytes, p.disk_available_bytes
        if not total or available is None:
            continue
        used = max(0.0, min(100.0, (total - min(available, total)) * 100.0 / total))
        if worst is None or used > worst[0]:
            worst = (used, p.role)
    return worst


def disk_usage(
    name: str, deleted: bool, observed: ObservedNodeState | None, threshold: float | None
) -> Finding | None:
    """Disk used above the threshold (percent)."""
    if deleted or threshold is None:
        return None
    worst = disk_used_percent(observed)
    if worst is None or worst[0] <= threshold:
        return None
    used, role = worst
    return Finding(
        value=round(used, 2),
        threshold=threshold,
        message=f"{name}: disk of {role} {used:.1f} % used (threshold {threshold:g} %)",
        details={"role": role},
    )


# ---- sync progress marks ------------------------------------------------------------------
#
# A mark per process remembers the height last seen to change, the network height then, when it
# changed, and whether the process has had peers since. Marks move only when an observation
# changes, so a steady heartbeat (which writes nothing) keeps them; the stall condition is then
# judged from the time elapsed since the mark.

Marks = dict[str, dict[str, Any]]


def next_marks(previous: Marks | None, observed: ObservedNodeState | None, now: datetime) -> Marks:
    """The marks after `observed` arrived at `now` (pure)."""
    previous = previous or {}
    marks: Marks = {}
    for p in observed.processes if observed is not None else []:
        if p.height is None:
            continue
        before = previous.get(p.role)
        had_peers = bool(p.peers) or bool(before and before.get("hadPeers"))
        if before is None or before.get("height") != p.height:
            marks[p.role] = {
                "height": p.height,
                "networkHeight": p.network_height,
                "since": now.isoformat(),
                "hadPeers": had_peers,
            }
        else:
            marks[p.role] = {**before, "hadPeers": had_peers}
    return marks


def marks_since(marks: Marks) -> datetime | None:
    """The oldest mark's time: no process can be stalled for longer than since then."""
    times = [datetime.fromisoformat(m["since"]) for m in marks.values() if "since" in m]
    return min(times) if times else None


def sync_stalled(
    name: str,
    network: str,
    desired: DesiredState,
    deleted: bool,
    observed: ObservedNodeState | None,
    marks: Marks | None,
    stall: float | None,
    now: datetime,
) -> Finding | None:
    """Running or syncing, and the height has not moved for `stall` seconds while the network
    head moved or the process has no peers.

    A lone regtest node has no peers and no new blocks by design: there, no peers counts only
    for a process that has had peers (a partition, not a node run alone).
    """
    if deleted or desired is not DesiredState.RUNNING or observed is None or stall is None:
        return None
    for p in observed.processes:
        if p.status not in (ProcessStatus.RUNNING, ProcessStatus.SYNCING) or p.height is None:
            continue
        mark = (marks or {}).get(p.role)
        if mark is None or mark.get("height") != p.height:
            continue
        stuck = (now - datetime.fromisoformat(mark["since"])).total_seconds()
        if stuck < stall:
            continue
        head_moved = (
            p.network_height is not None
            and mark.get("networkHeight") is not None
            and p.network_height > mark["networkHeight"]
        ) or (p.network_height is not None and p.network_height > p.height)
        isolated = p.peers == 0 and (network != "regtest" or bool(mark.get("hadPeers")))
        if not (head_moved or isolated):
            continue
        why = "the network head moved" if head_moved else "it has no peers"
        return Finding(
            value=round(stuck, 1),
            threshold=stall,
            message=f"{name}: {p.role} stuck at height {p.height} for {stuck:.0f} s while {why}",
            details={
                "role": p.role,
                "height": p.height,
                "networkHeight": p.network_height,
                "peers": p.peers,
                "since": mark["since"],
            },
        )
    return None


def executor_offline(name: str, last_sync_at: datetime | None, node_count: int) -> Finding:
    """An executor silent past the heartbeat timeout with `node_count` nodes on it."""
    silent = f"since {last_sync_at.isoformat(timespec='seconds')}" if last_sync_at else "ever"
    return Finding(
        value=float(node_count),
        threshold=None,
        message=f"executor {name} is offline (silent {silent}) with {node_count} node(s)",
        details={"lastSyncAt": last_sync_at.isoformat() if last_sync_at else None},
    )
