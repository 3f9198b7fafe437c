"""The executor's own Prometheus metrics: how its reconciles go, what fails, what restarts.

The control plane's /metrics tells the fleet's state as the executors report it; these tell how
one executor is doing its work: reconcile durations by outcome, failed applies per node, process
restarts and given-up crashes per node, the nodes it holds and whether it reaches its control
plane. They live in a registry of the runtime's own (not prometheus_client's global one), served
by `serve_metrics` on a loopback address when the agent's config asks for it (`[metrics]`).
"""

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from nodeplane.protocol import ObservedNodeState, RuntimeEvent, RuntimeEventType

# From a no-op reconcile (a few ms) to an apply that waits out a slow stop (minutes).
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# What one reconcile of one node came to.
APPLIED, APPLY_FAILED, TORN_DOWN, TEARDOWN_FAILED = (
    "applied",
    "apply_failed",
    "torn_down",
    "teardown_failed",
)


class ExecutorMetrics:
    """The instruments of one executor runtime, in their own registry."""

    def __init__(self, name: str, kind: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        info = Gauge(
            "nodeplane_executor_info",
            "Always 1: the executor's name, kind and version as labels.",
            ["name", "kind", "version"],
            registry=self.registry,
        )
        info.labels(name, kind, version).set(1)
        self.reconcile_duration = Histogram(
            "nodeplane_executor_reconcile_duration_seconds",
            "Time to reconcile one node (apply its spec, or tear it down), by outcome.",
            ["outcome"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.apply_errors = Counter(
            "nodeplane_executor_apply_errors",
            "Reconciles of a node that failed to apply its spec (each retry counts).",
            ["node"],
            registry=self.registry,
        )
        self.process_restarts = Counter(
            "nodeplane_executor_process_restarts",
            "Processes of a node that exited and were started again by their supervisor.",
            ["node"],
            registry=self.registry,
        )
        self.process_crashes = Counter(
            "nodeplane_executor_process_crashes",
            "Processes of a node that exited and were left down (crash loop given up).",
            ["node"],
            registry=self.registry,
        )
        self.nodes = Gauge(
            "nodeplane_executor_nodes",
            "Nodes the executor holds (deleted ones until torn down included).",
            registry=self.registry,
        )
        self.processes = Gauge(
            "nodeplane_executor_processes",
            "Processes of the executor's nodes by the status last observed.",
            ["status"],
            registry=self.registry,
        )
        self.control_plane_reachable = Gauge(
            "nodeplane_executor_control_plane_reachable",
            "1 while the last call to the control plane succeeded, else 0.",
            registry=self.registry,
        )
        self.last_sync = Gauge(
            "nodeplane_executor_last_sync_timestamp_seconds",
            "Unix time of the last heartbeat the control plane accepted.",
            registry=self.registry,
        )
        self._statuses: set[str] = set()

    def reconciled(self, outcome: str, seconds: float, node: str) -> None:
        """One node's reconcile ended with `outcome` after `seconds`."""
        self.reconcile_duration.labels(outcome).observe(seconds)
        if outcome == APPLY_FAILED:
            self.apply_errors.labels(node).inc()

    def events(self, events: Iterable[RuntimeEvent], node_names: dict[str, str]) -> None:
        """Count the restarts and crashes among events about to be reported; `node_names`
        maps node ids (as text) to names."""
        for event in events:
            if event.node_id is None:
                continue
            node = node_names.get(str(event.node_id), str(event.node_id))
            if event.type == RuntimeEventType.NODE_PROCESS_RESTARTED:
                self.process_restarts.labels(node).inc()
            elif event.type == RuntimeEventType.NODE_PROCESS_CRASHED:
                self.process_crashes.labels(node).inc()

    def observed(self, held: int, observations: Iterable[ObservedNodeState]) -> None:
        """The nodes held and their processes' statuses as last observed."""
        self.nodes.set(held)
        counts: dict[str, int] = {}
        for state in observations:
            for process in state.processes:
                counts[process.status.value] = counts.get(process.status.value, 0) + 1
        # A status once seen stays in the output at 0 rather than vanish.
        self._statuses |= set(counts)
        for status in self._statuses:
            self.processes.labels(status).set(counts.get(status, 0))

    def synced(self, ok: bool) -> None:
        """A heartbeat went through (`ok`) or failed."""
        self.control_plane_reachable.set(1 if ok else 0)
        if ok:
            self.last_sync.set(time.time())


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics listener; `close` stops it."""

    host: str
    port: int
    _server: WSGIServer

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()


def loopback_problem(host: str) -> str | None:
    """Why `host` is not a loopback address to serve metrics on, or None."""
    if host == "localhost":
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is not an IP address (use 127.0.0.1 or ::1)"
    if not address.is_loopback:
        return f"{host} is not a loopback address: the executor's metrics are served locally only"
    return None


def serve_metrics(metrics: ExecutorMetrics, host: str, port: int) -> MetricsServer:
    """Serve `metrics` at http://host:port/metrics from a thread (prometheus_client's own
    server); the host must be a loopback address."""
    if problem := loopback_problem(host):
        raise ValueError(problem)
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(host, server.server_port, server)
