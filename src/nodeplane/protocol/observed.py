"""What an executor observes of a node: raw per-process status plus optional sync metrics."""

from typing import Annotated

from pydantic import Field

from nodeplane.protocol.enums import ProcessStatus
from nodeplane.protocol.json_values import MAX_JSON_INTEGER
from nodeplane.protocol.spec import Identifier, Version
from nodeplane.protocol.text import StorableText
from nodeplane.protocol.wire import WireModel

MAX_MESSAGE_LENGTH = 4096
# A process's numbers that move while nothing else about the node changes (a growing chain, CPU
# time, memory, disk). An executor sends a new value of these on its own slower cadence
# (Intervals.metrics), not with every observation: see `differs_beyond_metrics`.
METRIC_FIELDS = frozenset(
    {
        "height",
        "network_height",
        "peers",
        "sync_progress",
        "disk_total_bytes",
        "disk_available_bytes",
        "cpu_seconds",
        "memory_bytes",
    }
)
MAX_APPLY_ERROR_LENGTH = 8192
Count = Annotated[int, Field(ge=0, le=MAX_JSON_INTEGER)]


class ObservedProcess(WireModel):
    """One process of a node as the executor sees it; metrics are absent until first probed."""

    role: Identifier
    status: ProcessStatus
    message: StorableText | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH)
    height: Count | None = None
    network_height: Count | None = None
    peers: Count | None = None
    sync_progress: float | None = Field(default=None, ge=0.0, le=1.0)
    disk_total_bytes: Count | None = None
    disk_available_bytes: Count | None = None
    cpu_seconds: float | None = Field(default=None, ge=0.0, le=float(MAX_JSON_INTEGER))
    memory_bytes: Count | None = None
    pid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # The version the running client reports of itself (an upgrade shows here once it runs).
    client_version: Version | None = None


class ObservedNodeState(WireModel):
    """The latest observation of a node; `revision` is the spec revision the executor applied."""

    revision: int = Field(ge=0)
    processes: list[ObservedProcess] = Field(default_factory=list, max_length=32)
    apply_error: StorableText | None = Field(default=None, max_length=MAX_APPLY_ERROR_LENGTH)
    # The last revision the executor saw with every process running or syncing: where an
    # auto-rollback goes back to.
    healthy_revision: int | None = Field(default=None, ge=0)


def differs_beyond_metrics(old: ObservedNodeState, new: ObservedNodeState) -> bool:
    """Whether `new` says more than `old` with other numbers: another revision, status, message,
    error, process or client version, or a metric that appeared or went away. Only the values
    of metrics both observations carry may differ for this to be False.
    """
    for name in ObservedNodeState.model_fields:
        if name != "processes" and getattr(old, name) != getattr(new, name):
            return True
    if len(old.processes) != len(new.processes):
        return True
    for before, after in zip(old.processes, new.processes, strict=True):
        for name in ObservedProcess.model_fields:
            was, now = getattr(before, name), getattr(after, name)
            if name in METRIC_FIELDS:
                if (was is None) != (now is None):
                    return True
            elif was != now:
                return True
    return False
