"""Table tests of `derive_node_phase` against DESIGN §6, row by row, plus a brute-force oracle."""

from itertools import combinations_with_replacement, product

import pytest

from nodeplane.protocol import (
    DesiredState,
    NodePhase,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    derive_node_phase,
)

SPEC_REVISION = 5
CURRENT = SPEC_REVISION
BEHIND = SPEC_REVISION - 1
AHEAD = SPEC_REVISION + 1

ROLES = ("execution", "consensus", "validator", "sidecar")


def observed(revision: int, *statuses: str, apply_error: str | None = None) -> ObservedNodeState:
    """An observation at `revision` with one process per status, in the given order."""
    return ObservedNodeState(
        revision=revision,
        processes=[
            ObservedProcess(role=f"{ROLES[i % len(ROLES)]}-{i}", status=ProcessStatus(s))
            for i, s in enumerate(statuses)
        ],
        apply_error=apply_error,
    )


def phase(
    desired: DesiredState | str,
    obs: ObservedNodeState | None,
    *,
    deleted: bool = False,
    revision: int = SPEC_REVISION,
) -> NodePhase:
    return derive_node_phase(
        desired_state=desired, revision=revision, deleted=deleted, observed=obs
    )


RUN = DesiredState.RUNNING
STOP = DesiredState.STOPPED

# (id, desired, deleted, observed, expected) — grouped by the DESIGN §6 row that must match.
TABLE: list[tuple[str, DesiredState, bool, ObservedNodeState | None, NodePhase]] = [
    # deleting: the node has a delete tombstone — wins over everything.
    ("deleting/no-observed", RUN, True, None, NodePhase.DELETING),
    ("deleting/stopped-no-observed", STOP, True, None, NodePhase.DELETING),
    ("deleting/all-running", RUN, True, observed(CURRENT, "running"), NodePhase.DELETING),
    (
        "deleting/over-error",
        RUN,
        True,
        observed(CURRENT, "error", "stopped", apply_error="boom"),
        NodePhase.DELETING,
    ),
    ("deleting/over-configuring", RUN, True, observed(BEHIND, "running"), NodePhase.DELETING),
    ("deleting/over-stopping", STOP, True, observed(CURRENT, "running"), NodePhase.DELETING),
    ("deleting/over-stopped", STOP, True, observed(CURRENT, "stopped"), NodePhase.DELETING),
    # provisioning: no observed state yet.
    ("provisioning/running", RUN, False, None, NodePhase.PROVISIONING),
    ("provisioning/stopped", STOP, False, None, NodePhase.PROVISIONING),
    # error: desired running and (applyError for the current revision, or any process error,
    # or any process stopped while the observed revision is current).
    (
        "error/apply-error-current-all-running",
        RUN,
        False,
        observed(CURRENT, "running", "running", apply_error="bad flag"),
        NodePhase.ERROR,
    ),
    (
        "error/apply-error-current-no-processes",
        RUN,
        False,
        observed(CURRENT, apply_error="cannot pull image"),
        NodePhase.ERROR,
    ),
    (
        "error/apply-error-current-syncing",
        RUN,
        False,
        observed(CURRENT, "syncing", apply_error="x"),
        NodePhase.ERROR,
    ),
    (
        "error/apply-error-empty-string-counts",
        RUN,
        False,
        observed(CURRENT, "running", apply_error=""),
        NodePhase.ERROR,
    ),
    (
        # An observed revision ahead of the spec is not "behind", so it counts as current.
        "error/apply-error-observed-ahead",
        RUN,
        False,
        observed(AHEAD, "running", apply_error="x"),
        NodePhase.ERROR,
    ),
    ("error/process-error-alone", RUN, False, observed(CURRENT, "error"), NodePhase.ERROR),
    (
        "error/process-error-among-running",
        RUN,
        False,
        observed(CURRENT, "running", "error", "running"),
        NodePhase.ERROR,
    ),
    (
        "error/process-error-beats-starting",
        RUN,
        False,
        observed(CURRENT, "starting", "error"),
        NodePhase.ERROR,
    ),
    (
        "error/process-error-while-behind",
        RUN,
        False,
        observed(BEHIND, "running", "error"),
        NodePhase.ERROR,
    ),
    (
        "error/process-error-far-behind",
        RUN,
        False,
        observed(0, "error"),
        NodePhase.ERROR,
    ),
    ("error/stopped-current", RUN, False, observed(CURRENT, "stopped"), NodePhase.ERROR),
    (
        "error/one-stopped-among-running-current",
        RUN,
        False,
        observed(CURRENT, "running", "stopped"),
        NodePhase.ERROR,
    ),
    (
        "error/stopped-beats-syncing-current",
        RUN,
        False,
        observed(CURRENT, "syncing", "stopped"),
        NodePhase.ERROR,
    ),
    ("error/stopped-observed-ahead", RUN, False, observed(AHEAD, "stopped"), NodePhase.ERROR),
    # configuring: desired running and observed revision < spec revision.
    (
        "configuring/apply-error-behind",
        RUN,
        False,
        observed(BEHIND, "running", apply_error="old failure"),
        NodePhase.CONFIGURING,
    ),
    (
        "configuring/stopped-behind",
        RUN,
        False,
        observed(BEHIND, "stopped"),
        NodePhase.CONFIGURING,
    ),
    (
        "configuring/stopped-and-apply-error-behind",
        RUN,
        False,
        observed(BEHIND, "stopped", "running", apply_error="x"),
        NodePhase.CONFIGURING,
    ),
    ("configuring/all-running", RUN, False, observed(BEHIND, "running"), NodePhase.CONFIGURING),
    ("configuring/no-processes", RUN, False, observed(BEHIND), NodePhase.CONFIGURING),
    ("configuring/syncing", RUN, False, observed(BEHIND, "syncing"), NodePhase.CONFIGURING),
    (
        "configuring/starting-stopping",
        RUN,
        False,
        observed(BEHIND, "starting", "stopping"),
        NodePhase.CONFIGURING,
    ),
    ("configuring/revision-zero", RUN, False, observed(0, "running"), NodePhase.CONFIGURING),
    # stopping: desired stopped and (observed revision < spec revision, or any process not in
    # stopped/error).
    ("stopping/behind-all-stopped", STOP, False, observed(BEHIND, "stopped"), NodePhase.STOPPING),
    ("stopping/behind-no-processes", STOP, False, observed(BEHIND), NodePhase.STOPPING),
    ("stopping/behind-error", STOP, False, observed(BEHIND, "error"), NodePhase.STOPPING),
    ("stopping/starting", STOP, False, observed(CURRENT, "starting"), NodePhase.STOPPING),
    ("stopping/running", STOP, False, observed(CURRENT, "running"), NodePhase.STOPPING),
    ("stopping/syncing", STOP, False, observed(CURRENT, "syncing"), NodePhase.STOPPING),
    ("stopping/stopping", STOP, False, observed(CURRENT, "stopping"), NodePhase.STOPPING),
    (
        "stopping/one-running-among-stopped",
        STOP,
        False,
        observed(CURRENT, "stopped", "running", "stopped"),
        NodePhase.STOPPING,
    ),
    (
        "stopping/syncing-beside-error",
        STOP,
        False,
        observed(CURRENT, "error", "syncing"),
        NodePhase.STOPPING,
    ),
    (
        "stopping/running-observed-ahead",
        STOP,
        False,
        observed(AHEAD, "running"),
        NodePhase.STOPPING,
    ),
    # stopped: desired stopped and every process stopped or error.
    ("stopped/no-processes", STOP, False, observed(CURRENT), NodePhase.STOPPED),
    ("stopped/one-stopped", STOP, False, observed(CURRENT, "stopped"), NodePhase.STOPPED),
    (
        "stopped/all-stopped",
        STOP,
        False,
        observed(CURRENT, "stopped", "stopped", "stopped"),
        NodePhase.STOPPED,
    ),
    ("stopped/error-only", STOP, False, observed(CURRENT, "error"), NodePhase.STOPPED),
    (
        "stopped/stopped-and-error",
        STOP,
        False,
        observed(CURRENT, "stopped", "error"),
        NodePhase.STOPPED,
    ),
    (
        # applyError only matters for desired running.
        "stopped/apply-error-ignored",
        STOP,
        False,
        observed(CURRENT, "stopped", apply_error="x"),
        NodePhase.STOPPED,
    ),
    ("stopped/observed-ahead", STOP, False, observed(AHEAD, "stopped"), NodePhase.STOPPED),
    # starting: any process starting or stopping.
    ("starting/starting", RUN, False, observed(CURRENT, "starting"), NodePhase.STARTING),
    ("starting/stopping", RUN, False, observed(CURRENT, "stopping"), NodePhase.STARTING),
    (
        "starting/running-and-starting",
        RUN,
        False,
        observed(CURRENT, "running", "starting"),
        NodePhase.STARTING,
    ),
    (
        "starting/syncing-and-starting",
        RUN,
        False,
        observed(CURRENT, "syncing", "starting"),
        NodePhase.STARTING,
    ),
    (
        "starting/syncing-and-stopping",
        RUN,
        False,
        observed(CURRENT, "syncing", "stopping"),
        NodePhase.STARTING,
    ),
    (
        "starting/starting-and-stopping",
        RUN,
        False,
        observed(CURRENT, "starting", "stopping", "running"),
        NodePhase.STARTING,
    ),
    ("starting/observed-ahead", RUN, False, observed(AHEAD, "starting"), NodePhase.STARTING),
    # syncing: any process syncing.
    ("syncing/one-syncing", RUN, False, observed(CURRENT, "syncing"), NodePhase.SYNCING),
    (
        "syncing/running-and-syncing",
        RUN,
        False,
        observed(CURRENT, "running", "syncing"),
        NodePhase.SYNCING,
    ),
    (
        "syncing/all-syncing",
        RUN,
        False,
        observed(CURRENT, "syncing", "syncing", "syncing"),
        NodePhase.SYNCING,
    ),
    # running: every process running.
    ("running/one", RUN, False, observed(CURRENT, "running"), NodePhase.RUNNING),
    (
        "running/three",
        RUN,
        False,
        observed(CURRENT, "running", "running", "running"),
        NodePhase.RUNNING,
    ),
    ("running/observed-ahead", RUN, False, observed(AHEAD, "running"), NodePhase.RUNNING),
    # "every process running" holds vacuously when no process is reported.
    ("running/vacuous-no-processes", RUN, False, observed(CURRENT), NodePhase.RUNNING),
]


@pytest.mark.parametrize(
    ("desired", "deleted", "obs", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_phase_table(
    desired: DesiredState,
    deleted: bool,
    obs: ObservedNodeState | None,
    expected: NodePhase,
) -> None:
    result = phase(desired, obs, deleted=deleted)
    assert result is expected


def test_every_phase_is_covered_by_the_table() -> None:
    assert {row[4] for row in TABLE} == set(NodePhase)


@pytest.mark.parametrize(
    ("desired", "obs", "expected"),
    [
        (DesiredState.RUNNING, observed(CURRENT, "running"), NodePhase.RUNNING),
        ("running", observed(CURRENT, "running"), NodePhase.RUNNING),
        (DesiredState.STOPPED, observed(CURRENT, "stopped"), NodePhase.STOPPED),
        ("stopped", observed(CURRENT, "stopped"), NodePhase.STOPPED),
        ("stopped", observed(CURRENT, "running"), NodePhase.STOPPING),
        ("running", observed(BEHIND, "running"), NodePhase.CONFIGURING),
    ],
)
def test_accepts_enum_and_string_desired_state(
    desired: DesiredState | str, obs: ObservedNodeState, expected: NodePhase
) -> None:
    result = phase(desired, obs)
    assert type(result) is NodePhase
    assert isinstance(result, str)
    assert result == expected.value
    assert result is expected


@pytest.mark.parametrize("value", ["RUNNING", "paused", ""])
def test_rejects_unknown_desired_state(value: str) -> None:
    with pytest.raises(ValueError):
        phase(value, observed(CURRENT, "running"))


def test_phase_values_are_the_design_names() -> None:
    assert [p.value for p in NodePhase] == [
        "deleting",
        "provisioning",
        "error",
        "configuring",
        "stopping",
        "stopped",
        "starting",
        "syncing",
        "running",
    ]


def test_revision_comparison_uses_the_given_spec_revision() -> None:
    obs = observed(7, "running")
    assert phase(RUN, obs, revision=7) is NodePhase.RUNNING
    assert phase(RUN, obs, revision=8) is NodePhase.CONFIGURING
    assert phase(STOP, observed(7, "stopped"), revision=8) is NodePhase.STOPPING
    assert phase(STOP, observed(7, "stopped"), revision=7) is NodePhase.STOPPED


# --- brute force against an independent oracle --------------------------------------------------


def oracle(
    desired: str,
    spec_revision: int,
    deleted: bool,
    observed_revision: int | None,
    apply_error: str | None,
    statuses: tuple[str, ...],
) -> str:
    """DESIGN §6 written literally: the first row whose condition holds gives the phase."""
    has_observed = observed_revision is not None
    behind = observed_revision is not None and observed_revision < spec_revision
    current = has_observed and not behind
    rows: list[tuple[str, bool]] = [
        ("deleting", deleted),
        ("provisioning", not has_observed),
        (
            "error",
            desired == "running"
            and (
                (apply_error is not None and current)
                or any(s == "error" for s in statuses)
                or (any(s == "stopped" for s in statuses) and current)
            ),
        ),
        ("configuring", desired == "running" and behind),
        (
            "stopping",
            desired == "stopped"
            and (behind or any(s not in ("stopped", "error") for s in statuses)),
        ),
        ("stopped", desired == "stopped" and all(s in ("stopped", "error") for s in statuses)),
        ("starting", any(s in ("starting", "stopping") for s in statuses)),
        ("syncing", any(s == "syncing" for s in statuses)),
        ("running", all(s == "running" for s in statuses)),
    ]
    for name, matches in rows:
        if matches:
            return name
    raise AssertionError(f"no DESIGN §6 row matches {desired=} {statuses=}")


ALL_STATUSES = [s.value for s in ProcessStatus]
MULTISETS = [
    combo for size in range(4) for combo in combinations_with_replacement(ALL_STATUSES, size)
]
OBSERVED_VARIANTS: list[tuple[int | None, str | None]] = [(None, None)] + [
    (rev, err)
    for rev in (SPEC_REVISION - 1, SPEC_REVISION, SPEC_REVISION + 1)
    for err in (None, "apply failed")
]


def test_multiset_enumeration_is_complete() -> None:
    assert len(MULTISETS) == 1 + 6 + 21 + 56


@pytest.mark.parametrize(
    ("desired", "deleted", "observed_revision", "apply_error"),
    [
        (d, deleted, rev, err)
        for d, deleted, (rev, err) in product(
            ("running", "stopped"), (True, False), OBSERVED_VARIANTS
        )
    ],
)
def test_brute_force_matches_oracle(
    desired: str, deleted: bool, observed_revision: int | None, apply_error: str | None
) -> None:
    mismatches = []
    for statuses in MULTISETS:
        obs = (
            None
            if observed_revision is None
            else observed(observed_revision, *statuses, apply_error=apply_error)
        )
        got = derive_node_phase(
            desired_state=desired, revision=SPEC_REVISION, deleted=deleted, observed=obs
        )
        want = oracle(desired, SPEC_REVISION, deleted, observed_revision, apply_error, statuses)
        assert isinstance(got, NodePhase)
        if got != want:
            mismatches.append((statuses, got.value, want))
    assert mismatches == []


def test_oracle_sanity() -> None:
    """The oracle itself gives the answers the DESIGN table states for hand-picked cases."""
    assert oracle("running", 5, False, 5, None, ("running", "syncing")) == "syncing"
    assert oracle("running", 5, False, 5, None, ("syncing", "starting")) == "starting"
    assert oracle("running", 5, False, 4, "x", ("running",)) == "configuring"
    assert oracle("running", 5, False, 5, "x", ("running",)) == "error"
    assert oracle("stopped", 5, False, 4, None, ("stopped",)) == "stopping"
    assert oracle("stopped", 5, False, 5, None, ("error", "stopped")) == "stopped"
    assert oracle("running", 5, True, None, None, ()) == "deleting"
