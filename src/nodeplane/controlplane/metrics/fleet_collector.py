"""Node and executor metrics, built from one read of the fleet at scrape time.

Like kube-state-metrics, these describe objects, not this process: every control-plane process
(and every worker) answers the same numbers, read from the database when scraped. The phase is
an enum-style gauge, one series per phase, 1 for the current one (kube_pod_status_phase).
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from nodeplane.controlplane.services.fleet_status import ExecutorStatus, FleetStatus, NodeStatus
from nodeplane.protocol import NodePhase, ObservedProcess

NODE_LABELS = ["organization", "node_id", "node", "executor", "chain", "network"]
PROCESS_LABELS = [*NODE_LABELS, "role"]
EXECUTOR_LABELS = ["organization", "executor", "kind"]

# Per process, from the executor's latest observation; a series is absent while its value is.
_PROCESS_GAUGES: list[tuple[str, str, Callable[[ObservedProcess], float | None]]] = [
    ("nodeplane_node_height", "Block height the process has reached.", lambda p: p.height),
    (
        "nodeplane_node_network_height",
        "Block height of the network as the process sees it.",
        lambda p: p.network_height,
    ),
    ("nodeplane_node_peers", "Peers the process is connected to.", lambda p: p.peers),
    (
        "nodeplane_node_sync_progress",
        "Sync progress as the client reports it, from 0 to 1.",
        lambda p: p.sync_progress,
    ),
    (
        "nodeplane_node_disk_used_bytes",
        "Bytes used on the filesystem holding the process's data.",
        lambda p: (
            p.disk_total_bytes - p.disk_available_bytes
            if p.disk_total_bytes is not None and p.disk_available_bytes is not None
            else None
        ),
    ),
    (
        "nodeplane_node_disk_total_bytes",
        "Size of the filesystem holding the process's data.",
        lambda p: p.disk_total_bytes,
    ),
]


def _node_labels(node: NodeStatus) -> list[str]:
    return [
        node.organization,
        str(node.id),
        node.name,
        node.executor,
        node.chain,
        node.network,
    ]


@dataclass(frozen=True)
class _Family:
    name: str
    documentation: str
    # Besides NODE_LABELS (node families) or EXECUTOR_LABELS (executor families).
    extra_label: str | None = None


_NODE_FAMILIES = [
    _Family(
        "nodeplane_node_phase",
        "1 for the node's derived phase (as the API shows it), 0 for the other phases.",
        "phase",
    ),
    _Family(
        "nodeplane_node_stale",
        "1 when the node's executor is offline, so its observation may be out of date.",
    ),
    _Family(
        "nodeplane_node_last_observed_age_seconds",
        "Seconds since the node's executor last reported it; absent before the first report.",
    ),
    *(_Family(name, doc, "role") for name, doc, _ in _PROCESS_GAUGES),
]
_EXECUTOR_FAMILIES = [
    _Family(
        "nodeplane_executor_online",
        "1 when the executor synced within the heartbeat timeout (the API's `online`).",
    ),
    _Family("nodeplane_executor_last_sync_age_seconds", "Seconds since the executor's last sync."),
    _Family(
        "nodeplane_executor_nodes",
        "Nodes assigned to the executor, including ones being deleted (the API's nodeCount).",
    ),
]
NODE_METRIC_NAMES = tuple(f.name for f in _NODE_FAMILIES)
EXECUTOR_METRIC_NAMES = tuple(f.name for f in _EXECUTOR_FAMILIES)
_PHASE, _STALE, _OBSERVED_AGE, _FIRST_PROCESS = 0, 1, 2, 3
_PHASES = list(NodePhase)
# (family index, the extra label's value or None, value): a node's samples, in family order.
_Sample = tuple[int, str | None, float]
_T = TypeVar("_T")


def _node_samples(node: NodeStatus) -> Iterator[_Sample]:
    for candidate in _PHASES:
        yield _PHASE, candidate.value, 1.0 if candidate is node.phase else 0.0
    yield _STALE, None, 1.0 if node.stale else 0.0
    if node.last_observed_age_seconds is not None:
        yield _OBSERVED_AGE, None, node.last_observed_age_seconds
    for process in node.processes:
        for index, (_, _, value) in enumerate(_PROCESS_GAUGES, _FIRST_PROCESS):
            if (number := value(process)) is not None:
                yield index, process.role, float(number)


def _executor_labels(executor: ExecutorStatus) -> list[str]:
    return [executor.organization, executor.name, executor.kind]


def _executor_samples(executor: ExecutorStatus) -> Iterator[_Sample]:
    yield 0, None, 1.0 if executor.online else 0.0
    if executor.last_sync_age_seconds is not None:
        yield 1, None, executor.last_sync_age_seconds
    yield 2, None, float(executor.node_count)


@dataclass(frozen=True)
class _Kind(Generic[_T]):
    """What the metrics describe of one kind of object (nodes, executors): its families, its
    label names, and how an object's label values and samples are read."""

    families: list[_Family]
    label_names: list[str]
    labels: Callable[[_T], list[str]]
    samples: Callable[[_T], Iterator[_Sample]]


_NODES = _Kind(_NODE_FAMILIES, NODE_LABELS, _node_labels, _node_samples)
_EXECUTORS = _Kind(_EXECUTOR_FAMILIES, EXECUTOR_LABELS, _executor_labels, _executor_samples)


def fleet_families(status: FleetStatus) -> list[Metric]:
    """Every node and executor metric family for `status` (pure)."""
    return [*_families_of(_NODES, status.nodes), *_families_of(_EXECUTORS, status.executors)]


def _families_of(kind: _Kind[_T], objects: Iterable[_T]) -> list[GaugeMetricFamily]:
    families: list[GaugeMetricFamily] = [
        GaugeMetricFamily(
            f.name,
            f.documentation,
            labels=[*kind.label_names, *([f.extra_label] if f.extra_label else [])],
        )
        for f in kind.families
    ]
    for item in objects:
        labels = kind.labels(item)
        for index, extra, value in kind.samples(item):
            families[index].add_metric(labels if extra is None else [*labels, extra], value)
    return families


# The text renderer writes an object's own labels once, then the extra label after them: that
# is the exposition's order (label names sorted) only while the extra names sort last.
assert all(
    f.extra_label is None or sorted([*kind.label_names, f.extra_label])[-1] == f.extra_label
    for kind in (_NODES, _EXECUTORS)
    for f in kind.families
)


# A sample's value as both exposition formats write it (prometheus_client's own function).
_number: Callable[[float], str] = floatToGoString


def _escape(value: str) -> str:
    """A label value as the exposition formats write it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(names: list[str], values: list[str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(zip(names, values, strict=True)))


class FleetText:
    """The fleet families as exposition text, what `fleet_families` encodes to, written
    directly: at 15,000 nodes (about 260,000 samples) prometheus_client's encoder took 4 s
    of the event loop per scrape, escaping every label of every sample; here each node's
    labels are escaped once (docs/benchmarks.md). Sample lines are the same in the text and
    OpenMetrics formats; each family's HELP and TYPE lines come from the encoder itself."""

    def __init__(self) -> None:
        self._nodes: list[list[str]] = [[] for _ in _NODES.families]
        self._executors: list[list[str]] = [[] for _ in _EXECUTORS.families]

    def add_nodes(self, nodes: Iterable[NodeStatus]) -> None:
        """Add the samples of these nodes (in the order the families list them)."""
        _write(_NODES, nodes, self._nodes)

    def add_executors(self, executors: Iterable[ExecutorStatus]) -> None:
        """Add the samples of these executors."""
        _write(_EXECUTORS, executors, self._executors)

    def parts(
        self, encode: Callable[[CollectorRegistry], bytes], lines: int = 5000
    ) -> Iterator[str]:
        """Every family, headed as `encode` (an exposition encoder) writes a family, in parts
        of at most `lines` samples, to send as they are joined."""
        for kind, samples in ((_NODES, self._nodes), (_EXECUTORS, self._executors)):
            for family, family_samples in zip(kind.families, samples, strict=True):
                head = _head(encode, family)
                for start in range(0, len(family_samples), lines):
                    yield head + "".join(family_samples[start : start + lines])
                    head = ""
                if head:
                    yield head


def _write(kind: _Kind[_T], objects: Iterable[_T], lines: list[list[str]]) -> None:
    """Append the sample lines of `objects` to `lines` (one list per family of `kind`)."""
    names = [f.name for f in kind.families]
    extras = [f.extra_label for f in kind.families]
    for item in objects:
        labels = _label_text(kind.label_names, kind.labels(item))
        for index, extra, value in kind.samples(item):
            more = "" if extra is None else f',{extras[index]}="{_escape(extra)}"'
            lines[index].append(f"{names[index]}{{{labels}{more}}} {_number(value)}\n")


def _head(encode: Callable[[CollectorRegistry], bytes], family: _Family) -> str:
    """The HELP and TYPE lines `encode` writes for `family` (an empty one: no samples)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([GaugeMetricFamily(family.name, family.documentation)]))
    return encode(registry).decode().removesuffix("# EOF\n")


class _Families(Collector):
    """Hands metric families made beforehand to a registry."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class FleetCollector(_Families):
    """The fleet families as prometheus_client's objects, for a registry: what `FleetText`
    writes is checked against their encoding (tests/controlplane/test_metrics_rules.py)."""

    def __init__(self, status: FleetStatus) -> None:
        super().__init__(fleet_families(status))
