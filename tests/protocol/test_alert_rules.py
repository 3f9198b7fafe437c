"""Table tests of the alert rules' pure conditions (protocol/alerts.py): node_down, disk_usage,
the sync progress marks and sync_stalled, and how settings layer."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodeplane.protocol import DesiredState, ObservedNodeState, ObservedProcess, ProcessStatus
from nodeplane.protocol.alerts import (
    AlertRule,
    default_threshold,
    disk_usage,
    effective,
    marks_since,
    next_marks,
    node_down,
    node_down_undecided,
    stall_seconds,
    sync_stalled,
    threshold_problem,
)

T0 = datetime(2027, 1, 1, tzinfo=UTC)
RUN, STOP = DesiredState.RUNNING, DesiredState.STOPPED


def obs(
    revision: int = 3, *processes: tuple[str, ProcessStatus, dict[str, Any]]
) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision,
        processes=[ObservedProcess(role=r, status=s, **m) for r, s, m in processes],
    )


def one(
    status: ProcessStatus = ProcessStatus.RUNNING, revision: int = 3, **m: Any
) -> ObservedNodeState:
    return obs(revision, ("node", status, m))


@pytest.mark.parametrize(
    ("desired", "observed", "deleted", "down"),
    [
        (RUN, one(ProcessStatus.STOPPED), False, True),
        (RUN, one(ProcessStatus.ERROR), False, True),
        (RUN, one(ProcessStatus.RUNNING), False, False),
        (RUN, one(ProcessStatus.SYNCING), False, False),
        (RUN, one(ProcessStatus.STARTING), False, False),
        (RUN, None, False, False),
        (RUN, one(ProcessStatus.STOPPED, revision=2), False, False),  # applying revision 3
        (RUN, one(ProcessStatus.STOPPED), True, False),  # being deleted
        (STOP, one(ProcessStatus.STOPPED), False, False),
        (STOP, one(ProcessStatus.ERROR), False, False),
        (
            RUN,
            obs(
                3, ("execution", ProcessStatus.RUNNING, {}), ("consensus", ProcessStatus.ERROR, {})
            ),
            False,
            True,
        ),
    ],
)
def test_node_down(
    desired: DesiredState, observed: ObservedNodeState | None, deleted: bool, down: bool
) -> None:
    finding = node_down("n", desired, 3, deleted, observed)
    assert (finding is not None) == down
    if finding is not None:
        assert finding.details["processes"] == {
            p.role: p.status.value
            for p in observed.processes  # type: ignore[union-attr]
            if p.status in (ProcessStatus.STOPPED, ProcessStatus.ERROR)
        }


def test_node_down_is_undecided_only_while_a_running_node_applies_a_revision() -> None:
    assert node_down_undecided(RUN, 3, False, one(revision=2))
    assert not node_down_undecided(RUN, 3, False, one(revision=3))
    assert not node_down_undecided(STOP, 3, False, one(revision=2))
    assert not node_down_undecided(RUN, 3, True, one(revision=2))
    assert not node_down_undecided(RUN, 3, False, None)


GIB = 1 << 30


@pytest.mark.parametrize(
    ("total", "available", "threshold", "value"),
    [
        (100 * GIB, 15 * GIB, 85.0, None),  # exactly at the threshold is not above it
        (100 * GIB, 14 * GIB, 85.0, 86.0),
        (100 * GIB, 50 * GIB, 40.0, 50.0),
        (100 * GIB, 200 * GIB, 1.0, None),  # more available than total reads as empty
        (0, 0, 1.0, None),  # no disk reported
        (None, None, 1.0, None),
    ],
)
def test_disk_usage(
    total: int | None, available: int | None, threshold: float, value: float | None
) -> None:
    finding = disk_usage(
        "n", False, one(disk_total_bytes=total, disk_available_bytes=available), threshold
    )
    assert (finding.value if finding else None) == value


def test_disk_usage_takes_the_fullest_process() -> None:
    observed = obs(
        3,
        ("execution", ProcessStatus.RUNNING, {"disk_total_bytes": 100, "disk_available_bytes": 5}),
        ("consensus", ProcessStatus.RUNNING, {"disk_total_bytes": 100, "disk_available_bytes": 50}),
    )
    finding = disk_usage("n", False, observed, 85.0)
    assert finding is not None and finding.details == {"role": "execution"}
    assert disk_usage("n", True, observed, 85.0) is None


def test_marks_move_only_when_the_height_does() -> None:
    first = next_marks(None, one(height=10, network_height=10, peers=0), T0)
    assert first == {
        "node": {"height": 10, "networkHeight": 10, "since": T0.isoformat(), "hadPeers": False}
    }
    later = T0 + timedelta(minutes=5)
    same = next_marks(first, one(height=10, network_height=12, peers=3), later)
    # The height stood still: the mark keeps its time and network height, and learns of peers.
    assert same["node"] == {**first["node"], "hadPeers": True}
    moved = next_marks(same, one(height=11, network_height=12, peers=0), later)
    assert moved["node"] == {
        "height": 11,
        "networkHeight": 12,
        "since": later.isoformat(),
        "hadPeers": True,
    }
    assert marks_since(moved) == later
    # A process without a height has no mark; no marks, no time.
    assert next_marks(moved, one(), later) == {}
    assert marks_since({}) is None


def stalled_after(
    seconds: float,
    now_obs: ObservedNodeState,
    marks_from: ObservedNodeState,
    *,
    network: str = "mainnet",
    stall: float | None = 60.0,
    desired: DesiredState = RUN,
) -> bool:
    marks = next_marks(None, marks_from, T0)
    marks = next_marks(marks, now_obs, T0 + timedelta(seconds=seconds / 2))
    finding = sync_stalled(
        "n", network, desired, False, now_obs, marks, stall, T0 + timedelta(seconds=seconds)
    )
    return finding is not None


@pytest.mark.parametrize(
    ("seconds", "now", "before", "network", "stalled"),
    [
        # The head moved past a node that stayed put, long enough: stalled.
        (
            61,
            one(height=5, network_height=9, peers=4),
            one(height=5, network_height=5, peers=4),
            "mainnet",
            True,
        ),
        # ...not long enough yet.
        (
            59,
            one(height=5, network_height=9, peers=4),
            one(height=5, network_height=5, peers=4),
            "mainnet",
            False,
        ),
        # At the head with peers, nothing new to fetch: not stalled.
        (
            600,
            one(height=5, network_height=5, peers=4),
            one(height=5, network_height=5, peers=4),
            "mainnet",
            False,
        ),
        # No peers on a real network: stalled.
        (
            61,
            one(height=5, network_height=5, peers=0),
            one(height=5, network_height=5, peers=0),
            "mainnet",
            True,
        ),
        # A regtest node alone, as it was started: not stalled.
        (
            600,
            one(height=5, network_height=5, peers=0),
            one(height=5, network_height=5, peers=0),
            "regtest",
            False,
        ),
        # A regtest node that had a peer and lost it: stalled.
        (
            61,
            one(height=5, network_height=5, peers=0),
            one(height=5, network_height=5, peers=1),
            "regtest",
            True,
        ),
        # Behind the head it already knew of (syncing, stuck): stalled.
        (
            61,
            one(ProcessStatus.SYNCING, height=5, network_height=9, peers=2),
            one(ProcessStatus.SYNCING, height=5, network_height=9, peers=2),
            "mainnet",
            True,
        ),
        # Progress between the two reports: not stalled.
        (
            61,
            one(height=6, network_height=9, peers=2),
            one(height=5, network_height=9, peers=2),
            "mainnet",
            False,
        ),
        # A process down is node_down's business, not this rule's.
        (
            61,
            one(ProcessStatus.ERROR, height=5, network_height=9, peers=0),
            one(height=5, network_height=5, peers=4),
            "mainnet",
            False,
        ),
    ],
)
def test_sync_stalled(
    seconds: float,
    now: ObservedNodeState,
    before: ObservedNodeState,
    network: str,
    stalled: bool,
) -> None:
    assert stalled_after(seconds, now, before, network=network) is stalled


def test_sync_stalled_needs_a_running_node_and_a_stall_time() -> None:
    now, before = one(height=5, network_height=9, peers=4), one(height=5, network_height=5)
    assert stalled_after(61, now, before)
    assert not stalled_after(61, now, before, desired=STOP)
    assert not stalled_after(61, now, before, stall=None)
    assert not stalled_after(61, now, before, stall=120)


def test_stall_times_are_per_chain() -> None:
    assert stall_seconds("litecoin") == 20 * 60
    assert stall_seconds("bitcoin") > stall_seconds("litecoin") > stall_seconds("ethereum")
    assert stall_seconds("no-such-chain") == 30 * 60
    assert default_threshold(AlertRule.SYNC_STALLED, "ethereum") == 300
    assert default_threshold(AlertRule.SYNC_STALLED) is None
    assert default_threshold(AlertRule.DISK_USAGE) == 85.0
    assert default_threshold(AlertRule.NODE_DOWN) is None


def test_settings_layer_node_over_organization_over_built_in() -> None:
    rule = AlertRule.DISK_USAGE
    assert effective(rule, None, None, None) == effective(rule, None, (None, None), (None, None))
    built_in = effective(rule, None, None, None)
    assert (built_in.enabled, built_in.threshold) == (True, 85.0)
    org_off = effective(rule, None, (False, 70.0), None)
    assert (org_off.enabled, org_off.threshold) == (False, 70.0)
    node_threshold_only = effective(rule, None, (False, 70.0), (None, 95.0))
    assert (node_threshold_only.enabled, node_threshold_only.threshold) == (False, 95.0)
    node_on = effective(rule, None, (False, 70.0), (True, None))
    assert (node_on.enabled, node_on.threshold) == (True, 70.0)
    stall = effective(AlertRule.SYNC_STALLED, "litecoin", (None, None), None)
    assert stall.threshold == 20 * 60


@pytest.mark.parametrize(
    ("rule", "threshold", "ok"),
    [
        (AlertRule.DISK_USAGE, 85.0, True),
        (AlertRule.DISK_USAGE, 100.0, True),
        (AlertRule.DISK_USAGE, 100.5, False),
        (AlertRule.DISK_USAGE, 0.5, False),
        (AlertRule.SYNC_STALLED, 5.0, True),
        (AlertRule.SYNC_STALLED, 4.0, False),
        (AlertRule.SYNC_STALLED, 8 * 24 * 3600.0, False),
        (AlertRule.NODE_DOWN, 1.0, False),
        (AlertRule.EXECUTOR_OFFLINE, 1.0, False),
        (AlertRule.NODE_DOWN, None, True),
    ],
)
def test_threshold_bounds(rule: AlertRule, threshold: float | None, ok: bool) -> None:
    assert (threshold_problem(rule, threshold) is None) is ok
