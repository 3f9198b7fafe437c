"""Node and executor metrics, built from one read of the fleet at scrape time.

Like kube-state-metrics, these describe objects, not this process: every control-plane process
(and every worker) answers the same numbers, read from the database when scraped. The phase is
an enum-style gauge, one series per phase, 1 for the current one (kube_pod_status_phase).
"""

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nodeplane.controlplane.services.fleet_status import FleetStatus, NodeStatus
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

NODE_METRIC_NAMES = (
    "nodeplane_node_phase",
    "nodeplane_node_stale",
    "nodeplane_node_last_observed_age_seconds",
    *(name for name, _, _ in _PROCESS_GAUGES),
)
EXECUTOR_METRIC_NAMES = (
    "nodeplane_executor_online",
    "nodeplane_executor_last_sync_age_seconds",
    "nodeplane_executor_nodes",
)


def _node_labels(node: NodeStatus) -> list[str]:
    return [
        node.organization,
        str(node.id),
        node.name,
        node.executor,
        node.chain,
        node.network,
    ]


def fleet_families(status: FleetStatus) -> list[Metric]:
    """Every node and executor metric family for `status` (pure)."""
    phase = GaugeMetricFamily(
        "nodeplane_node_phase",
        "1 for the node's derived phase (as the API shows it), 0 for the other phases.",
        labels=[*NODE_LABELS, "phase"],
    )
    stale = GaugeMetricFamily(
        "nodeplane_node_stale",
        "1 when the node's executor is offline, so its observation may be out of date.",
        labels=NODE_LABELS,
    )
    observed_age = GaugeMetricFamily(
        "nodeplane_node_last_observed_age_seconds",
        "Seconds since the node's executor last reported it; absent before the first report.",
        labels=NODE_LABELS,
    )
    process_families = [
        (GaugeMetricFamily(name, doc, labels=PROCESS_LABELS), value)
        for name, doc, value in _PROCESS_GAUGES
    ]
    for node in status.nodes:
        labels = _node_labels(node)
        for candidate in NodePhase:
            phase.add_metric([*labels, candidate.value], 1.0 if candidate is node.phase else 0.0)
        stale.add_metric(labels, 1.0 if node.stale else 0.0)
        if node.last_observed_age_seconds is not None:
            observed_age.add_metric(labels, node.last_observed_age_seconds)
        for process in node.processes:
            process_labels = [*labels, process.role]
            for family, value in process_families:
                if (number := value(process)) is not None:
                    family.add_metric(process_labels, float(number))

    online = GaugeMetricFamily(
        "nodeplane_executor_online",
        "1 when the executor synced within the heartbeat timeout (the API's `online`).",
        labels=EXECUTOR_LABELS,
    )
    sync_age = GaugeMetricFamily(
        "nodeplane_executor_last_sync_age_seconds",
        "Seconds since the executor's last sync.",
        labels=EXECUTOR_LABELS,
    )
    node_count = GaugeMetricFamily(
        "nodeplane_executor_nodes",
        "Nodes assigned to the executor, including ones being deleted (the API's nodeCount).",
        labels=EXECUTOR_LABELS,
    )
    for executor in status.executors:
        labels = [executor.organization, executor.name, executor.kind]
        online.add_metric(labels, 1.0 if executor.online else 0.0)
        if executor.last_sync_age_seconds is not None:
            sync_age.add_metric(labels, executor.last_sync_age_seconds)
        node_count.add_metric(labels, float(executor.node_count))

    return [
        phase,
        stale,
        observed_age,
        *(family for family, _ in process_families),
        online,
        sync_age,
        node_count,
    ]


class FleetCollector(Collector):
    """Hands one scrape's fleet families to a registry (the read happened before, async)."""

    def __init__(self, status: FleetStatus) -> None:
        self._families = fleet_families(status)

    def collect(self) -> Iterator[Metric]:
        yield from self._families
