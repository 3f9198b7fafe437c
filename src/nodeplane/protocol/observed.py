"""What an executor observes of a node: raw per-process status plus optional sync metrics."""

from operator import itemgetter
from typing import Annotated, Any

from pydantic import Field, ValidationError

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


def stored_observation(raw: dict[str, Any] | None) -> ObservedNodeState | None:
    """A stored observation as a model; None before the first report, or for one stored before
    today's rules that no longer passes them (the executor's next heartbeat replaces it, and
    until then it cannot break every read of the node)."""
    if raw is None:
        return None
    try:
        return ObservedNodeState.model_validate(raw)
    except ValidationError:
        return None


def differs_beyond_metrics(old: ObservedNodeState, new: ObservedNodeState) -> bool:
    """Whether `new` says more than `old` with other numbers: another revision, status, message,
    error, process or client version, or a metric that appeared or went away. Only the values
    of metrics both observations carry may differ for this to be False.
    """
    # Field values read from the models' own dicts, in one C call per model: this runs for
    # every node of every heartbeat that moved a metric.
    if _node_fields(old.__dict__) != _node_fields(new.__dict__):
        return True
    if len(old.processes) != len(new.processes):
        return True
    for before, after in zip(old.processes, new.processes, strict=True):
        was, now = before.__dict__, after.__dict__
        if _process_fields(was) != _process_fields(now):
            return True
        if [w is None for w in _metrics(was)] != [n is None for n in _metrics(now)]:
            return True
    return False


# Each names several fields, so each returns a tuple.
_node_fields = itemgetter(*(n for n in ObservedNodeState.model_fields if n != "processes"))
_process_fields = itemgetter(*(n for n in ObservedProcess.model_fields if n not in METRIC_FIELDS))
_metrics = itemgetter(*sorted(METRIC_FIELDS))
