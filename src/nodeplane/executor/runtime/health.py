"""Whether a newly applied revision proved itself within its health window: a pure judgement.

A revision is healthy once every process of the node is `running` or `syncing` while the node
should run. One that has not been healthy since it was applied, when its window (the spec's
`rollout.healthWindowSeconds`) has passed, is an apply error of that revision: the control plane
then rolls back by itself if the spec asks for `rollout.autoRollback`. A revision that was
healthy once and crashes later is not an apply error: its processes say what happened.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nodeplane.protocol import DesiredState, ObservedProcess, ProcessStatus

HEALTHY = frozenset({ProcessStatus.RUNNING, ProcessStatus.SYNCING})


@dataclass(frozen=True)
class HealthVerdict:
    """`healthy`: the revision is healthy now; `error`: why it failed its window (else None)."""

    healthy: bool
    error: str | None = None


def judge_health(
    *,
    revision: int,
    desired: DesiredState,
    processes: Sequence[ObservedProcess],
    applied_at: datetime | None,
    window_seconds: int,
    healthy_revision: int | None,
    now: datetime,
) -> HealthVerdict:
    """The verdict on `revision`, applied at `applied_at`, given what its processes are now."""
    if desired is not DesiredState.RUNNING:
        return HealthVerdict(healthy=False)
    if processes and all(p.status in HEALTHY for p in processes):
        return HealthVerdict(healthy=True)
    if healthy_revision == revision or applied_at is None:
        return HealthVerdict(healthy=False)
    if (now - applied_at).total_seconds() < window_seconds:
        return HealthVerdict(healthy=False)
    details = [
        f"{p.role} {p.status.value}" + (f": {p.message}" if p.message else "")
        for p in processes
        if p.status not in HEALTHY
    ]
    return HealthVerdict(
        healthy=False,
        error=f"revision {revision} did not reach running or syncing within "
        f"{window_seconds} s" + (f" ({'; '.join(details)})" if details else ""),
    )
