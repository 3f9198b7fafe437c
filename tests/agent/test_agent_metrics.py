"""The agent's own metrics: the [metrics] section of agent.toml (loopback only) and what the
runtime's instruments count, read through prometheus_client's parser."""

import uuid
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nodeplane.executor.agent.config import ConfigError, load_config
from nodeplane.executor.runtime.metrics import APPLIED, APPLY_FAILED, ExecutorMetrics
from nodeplane.protocol import (
    EventLevel,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
)

BASE = '[control_plane]\nurl = "http://127.0.0.1:8080"\napi_key = "k"\n'


def _load(tmp_path: Path, metrics: str) -> tuple[str, int] | None:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + metrics)
    return load_config(path).metrics.address()


def test_no_metrics_section_serves_nothing(tmp_path: Path) -> None:
    assert _load(tmp_path, "") is None


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9465", ("127.0.0.1", 9465)),
        ("127.0.0.2:9465", ("127.0.0.2", 9465)),
        ("[::1]:9465", ("::1", 9465)),
        ("localhost:9465", ("localhost", 9465)),
    ],
)
def test_loopback_addresses_are_taken(
    tmp_path: Path, listen: str, address: tuple[str, int]
) -> None:
    assert _load(tmp_path, f'[metrics]\nlisten = "{listen}"\n') == address


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("0.0.0.0:9465", "0.0.0.0 is not a loopback address"),
        ("10.1.2.3:9465", "10.1.2.3 is not a loopback address"),
        ("metrics.example.com:9465", "is not an IP address"),
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:99999", "expected host:port"),
        ("127.0.0.1:http", "expected host:port"),
    ],
)
def test_other_addresses_are_refused(tmp_path: Path, listen: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        _load(tmp_path, f'[metrics]\nlisten = "{listen}"\n')


def _samples(metrics: ExecutorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_instruments_count_what_the_runtime_tells_them() -> None:
    metrics = ExecutorMetrics("host-a", "agent", "1.2.3")
    node_a, node_b = uuid.uuid4(), uuid.uuid4()
    names = {str(node_a): "a", str(node_b): "b"}
    metrics.reconciled(APPLIED, 0.02, "a")
    metrics.reconciled(APPLY_FAILED, 0.5, "b")
    metrics.reconciled(APPLY_FAILED, 0.5, "b")

    def event(node: uuid.UUID, type_: str) -> RuntimeEvent:
        return RuntimeEvent(node_id=node, type=type_, level=EventLevel.WARN, message="m")

    metrics.events(
        [
            event(node_a, "node.process.restarted"),
            event(node_a, "node.process.restarted"),
            event(node_b, "node.process.crashed"),
            event(node_b, "node.apply.failed"),  # counted by the reconcile, not here
        ],
        names,
    )
    metrics.observed(
        2,
        [
            ObservedNodeState(
                revision=1,
                processes=[
                    ObservedProcess(role="node", status=ProcessStatus.RUNNING),
                    ObservedProcess(role="beacon", status=ProcessStatus.SYNCING),
                ],
            )
        ],
    )
    metrics.synced(True)
    s = _samples(metrics)
    assert (
        s[
            (
                "nodeplane_executor_info",
                (("kind", "agent"), ("name", "host-a"), ("version", "1.2.3")),
            )
        ]
        == 1
    )
    assert (
        s[("nodeplane_executor_reconcile_duration_seconds_count", (("outcome", "applied"),))] == 1
    )
    assert (
        s[("nodeplane_executor_reconcile_duration_seconds_count", (("outcome", "apply_failed"),))]
        == 2
    )
    assert s[("nodeplane_executor_apply_errors_total", (("node", "b"),))] == 2
    assert ("nodeplane_executor_apply_errors_total", (("node", "a"),)) not in s
    assert s[("nodeplane_executor_process_restarts_total", (("node", "a"),))] == 2
    assert s[("nodeplane_executor_process_crashes_total", (("node", "b"),))] == 1
    assert s[("nodeplane_executor_nodes", ())] == 2
    assert s[("nodeplane_executor_processes", (("status", "running"),))] == 1
    assert s[("nodeplane_executor_processes", (("status", "syncing"),))] == 1
    assert s[("nodeplane_executor_control_plane_reachable", ())] == 1
    assert s[("nodeplane_executor_last_sync_timestamp_seconds", ())] > 0

    # A status no process has any more reads 0 instead of vanishing; a failed sync reads 0.
    metrics.observed(2, [])
    metrics.synced(False)
    s = _samples(metrics)
    assert s[("nodeplane_executor_processes", (("status", "running"),))] == 0
    assert s[("nodeplane_executor_control_plane_reachable", ())] == 0
