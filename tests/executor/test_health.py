"""The health-window judgement of a newly applied revision, as a table."""

from datetime import UTC, datetime, timedelta

import pytest

from nodeplane.executor.runtime.health import judge_health
from nodeplane.protocol import DesiredState, ObservedProcess, ProcessStatus

S = ProcessStatus
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def proc(status: ProcessStatus, role: str = "node", message: str | None = None) -> ObservedProcess:
    return ObservedProcess(role=role, status=status, message=message)


CASES = [
    # (name, desired, statuses, seconds since applied, healthy revision, healthy?, error?)
    ("running", DesiredState.RUNNING, [S.RUNNING], 5, None, True, False),
    ("syncing counts", DesiredState.RUNNING, [S.SYNCING, S.RUNNING], 5, None, True, False),
    ("starting within window", DesiredState.RUNNING, [S.STARTING], 59, None, False, False),
    ("starting past window", DesiredState.RUNNING, [S.STARTING], 61, None, False, True),
    ("error past window", DesiredState.RUNNING, [S.ERROR], 61, 3, False, True),
    ("one of two down", DesiredState.RUNNING, [S.RUNNING, S.ERROR], 120, None, False, True),
    ("no processes past window", DesiredState.RUNNING, [], 61, None, False, True),
    ("healthy once, crashes later", DesiredState.RUNNING, [S.ERROR], 600, 4, False, False),
    ("stopped node is not judged", DesiredState.STOPPED, [S.STOPPED], 600, None, False, False),
]


@pytest.mark.parametrize(
    ("desired", "statuses", "age", "healthy_revision", "healthy", "error"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_health_window(
    desired: DesiredState,
    statuses: list[ProcessStatus],
    age: int,
    healthy_revision: int | None,
    healthy: bool,
    error: bool,
) -> None:
    verdict = judge_health(
        revision=4,
        desired=desired,
        processes=[proc(s, role=f"p{i}") for i, s in enumerate(statuses)],
        applied_at=NOW - timedelta(seconds=age),
        window_seconds=60,
        healthy_revision=healthy_revision,
        now=NOW,
    )
    assert verdict.healthy is healthy
    assert (verdict.error is not None) is error


def test_the_error_says_what_is_wrong() -> None:
    verdict = judge_health(
        revision=7,
        desired=DesiredState.RUNNING,
        processes=[proc(S.ERROR, message="litecoind exited with status 1: bad option")],
        applied_at=NOW - timedelta(seconds=30),
        window_seconds=20,
        healthy_revision=6,
        now=NOW,
    )
    assert verdict.error == (
        "revision 7 did not reach running or syncing within 20 s "
        "(node error: litecoind exited with status 1: bad option)"
    )


def test_unknown_apply_time_is_never_an_error() -> None:
    verdict = judge_health(
        revision=2,
        desired=DesiredState.RUNNING,
        processes=[proc(S.ERROR)],
        applied_at=None,
        window_seconds=1,
        healthy_revision=None,
        now=NOW,
    )
    assert verdict.error is None
