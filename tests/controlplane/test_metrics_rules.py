"""The metrics' pure parts: bounded labels, the token check, the fleet families, and the names
that docs/metrics.md and the Grafana dashboard use (controlplane/metrics/)."""

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_latest_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Mount, Route

from nodeplane.controlplane.metrics import instruments
from nodeplane.controlplane.metrics.endpoint import bearer_matches, token_problem
from nodeplane.controlplane.metrics.fleet_collector import (
    EXECUTOR_METRIC_NAMES,
    NODE_METRIC_NAMES,
    FleetCollector,
    FleetText,
)
from nodeplane.controlplane.metrics.request_labels import (
    RouteTemplates,
    method_label,
    operation_label,
)
from nodeplane.controlplane.services.fleet_status import ExecutorStatus, FleetStatus, NodeStatus
from nodeplane.executor.runtime.metrics import ExecutorMetrics
from nodeplane.protocol import NodePhase, ObservedProcess, ProcessStatus
from nodeplane.protocol.addresses import parse_listen_address

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "nodeplane.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"


def agent_metric_names() -> set[str]:
    """What an agent serves (executor/runtime/metrics.py), as Prometheus names them."""
    registry = ExecutorMetrics("host", "agent", "0").registry
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in registry.collect()
    }


COLLECTED = {
    *NODE_METRIC_NAMES,
    *EXECUTOR_METRIC_NAMES,
    instruments.REQUEST_DURATION_SECONDS,
    instruments.SPEC_POLLS_HELD,
    f"{instruments.EVENTS_PRUNED}_total",
    f"{instruments.SYNCS}_total",
    f"{instruments.POLL_LOOKS}_total",
    f"{instruments.EXECUTOR_CALLS}_total",
    f"{instruments.MOVED_SYNC_BATCHES}_total",
    *agent_metric_names(),
}
HISTOGRAMS = {instruments.REQUEST_DURATION_SECONDS}
NAME = re.compile(r"\bnodeplane_[a-z0-9_]+")


def documented_names() -> set[str]:
    """Names in the first column of docs/metrics.md's tables."""
    return set(re.findall(r"^\| `(nodeplane_[a-z0-9_]+)` \|", METRICS_DOC.read_text(), re.M))


def dashboard_queries(value: Any) -> list[str]:
    """Every `expr` and template-variable query string in the dashboard."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("expr", "query", "definition") and isinstance(item, str):
                found.append(item)
            else:
                found += dashboard_queries(item)
    elif isinstance(value, list):
        for item in value:
            found += dashboard_queries(item)
    return found


def base_name(series: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    return series


def test_every_collected_metric_is_documented_and_every_documented_one_collected() -> None:
    assert documented_names() == COLLECTED


def test_the_dashboard_uses_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    used = {base_name(name) for query in queries for name in NAME.findall(query)}
    assert used, "the dashboard queries no nodeplane metric"
    assert used <= COLLECTED, used - COLLECTED
    # It shows what an operator looks at first.
    for expected in (
        "nodeplane_node_phase",
        "nodeplane_node_height",
        "nodeplane_node_network_height",
        "nodeplane_node_peers",
        "nodeplane_node_disk_used_bytes",
        "nodeplane_executor_online",
        "nodeplane_http_request_duration_seconds",
        "nodeplane_spec_polls_held",
    ):
        assert expected in used, expected
    # Panel ids are unique (Grafana keys panel state by them).
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_operation_labels_are_the_schemas_root_fields_or_a_fixed_word() -> None:
    known = frozenset({"syncExecutor", "nodes"})
    assert operation_label({"": frozenset({"syncExecutor"})}, known) == "syncExecutor"
    assert operation_label({"A": frozenset({"nodes"}), "B": frozenset({"nodes"})}, known) == "nodes"
    assert operation_label({"": frozenset({"nodes", "syncExecutor"})}, known) == "multiple"
    assert operation_label({"": frozenset({"whatAnAttackerTyped"})}, known) == "other"
    assert operation_label({"": frozenset({"__typename"})}, known) == "other"
    assert operation_label({}, known) == "other"


def test_schema_root_fields_include_the_executor_calls() -> None:
    from nodeplane.controlplane.api.schema import ROOT_FIELDS

    assert {"syncExecutor", "executorSpecs", "nodes", "createNode"} <= ROOT_FIELDS


def test_methods_outside_the_usual_few_are_other() -> None:
    assert method_label("GET") == "GET"
    assert method_label("POST") == "POST"
    assert method_label("BREW") == "other"
    assert method_label("get") == "other"


def test_routes_are_labelled_by_template() -> None:
    async def page() -> None: ...

    async def other() -> None: ...

    static = object()
    templates = RouteTemplates(
        [
            Route("/nodes/{node_id}", page),  # type: ignore[arg-type]
            Mount("/static", app=static),  # type: ignore[arg-type]
        ]
    )
    templates.add(other, "/metrics")
    assert templates.label({"endpoint": page, "path": "/nodes/abc"}) == "/nodes/{node_id}"
    assert templates.label({"endpoint": static}) == "/static/{path}"
    assert templates.label({"endpoint": other}) == "/metrics"
    assert templates.label({"path": "/nowhere"}) == "unmatched"
    assert templates.label({"endpoint": object()}) == "unmatched"


def test_bearer_matches_only_the_exact_token() -> None:
    token = "t" * 20
    assert bearer_matches(f"Bearer {token}", token)
    assert bearer_matches(f"bearer {token}", token)
    assert not bearer_matches(None, token)
    assert not bearer_matches(token, token)
    assert not bearer_matches(f"Bearer {token}x", token)
    assert not bearer_matches(f"Bearer {token[:-1]}", token)
    assert not bearer_matches("Bearer ", token)
    assert not bearer_matches(f"Basic {token}", token)


def test_short_tokens_are_refused() -> None:
    assert token_problem(None) is None
    assert token_problem("x" * 16) is None
    assert token_problem("x" * 15) is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:9100", ("::1", 9100))],
)
def test_listen_addresses_parse(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(value) == expected


@pytest.mark.parametrize("value", ["9100", "host", ":9100", "host:0", "host:70000", "host:x"])
def test_bad_listen_addresses_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(value)


def test_fleet_families_describe_each_node_and_executor() -> None:
    node_id = uuid.uuid4()
    status = FleetStatus(
        executors=[
            ExecutorStatus(uuid.uuid4(), 'org "one"', "host-a", "agent", True, 1.5, 2),
            ExecutorStatus(uuid.uuid4(), 'org "one"', "host-b", "operator", False, None, 0),
        ],
        nodes=[
            NodeStatus(
                id=node_id,
                organization='org "one"',
                name="ltc",
                executor="host-a",
                chain="litecoin",
                network="regtest",
                phase=NodePhase.SYNCING,
                stale=False,
                last_observed_age_seconds=2.0,
                processes=(
                    ObservedProcess(
                        role="node",
                        status=ProcessStatus.SYNCING,
                        height=10,
                        disk_total_bytes=100,
                        disk_available_bytes=40,
                    ),
                ),
            ),
            NodeStatus(
                id=uuid.uuid4(),
                organization='org "one"',
                name="new",
                executor="host-a",
                chain="litecoin",
                network="regtest",
                phase=NodePhase.PROVISIONING,
                stale=False,
                last_observed_age_seconds=None,
                processes=(),
            ),
        ],
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(status))
    samples = [
        s
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    ]

    def values(name: str, **labels: str) -> list[float]:
        return [
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    ltc = {"node_id": str(node_id)}
    assert sorted(values("nodeplane_node_phase", **ltc)) == [0.0] * 8 + [1.0]
    assert values("nodeplane_node_phase", phase="syncing", **ltc) == [1.0]
    assert values("nodeplane_node_height", role="node", **ltc) == [10.0]
    assert values("nodeplane_node_disk_used_bytes", **ltc) == [60.0]
    assert values("nodeplane_node_disk_total_bytes", **ltc) == [100.0]
    # Values the executor has not reported are absent, not zero.
    assert values("nodeplane_node_peers", **ltc) == []
    assert values("nodeplane_node_sync_progress", **ltc) == []
    assert values("nodeplane_node_last_observed_age_seconds", node="new") == []
    assert values("nodeplane_node_phase", node="new", phase="provisioning") == [1.0]
    # Label values users chose survive the exposition's escaping.
    assert values("nodeplane_executor_online", organization='org "one"', executor="host-a") == [1]
    assert values("nodeplane_executor_online", executor="host-b", kind="operator") == [0.0]
    assert values("nodeplane_executor_last_sync_age_seconds", executor="host-b") == []
    assert values("nodeplane_executor_nodes", executor="host-a") == [2.0]


# Label values users choose: quotes, backslashes, newlines, any Unicode.
_label_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_number = st.one_of(st.none(), st.integers(0, 2**62), st.floats(0, 1e15, allow_nan=False))


@st.composite
def _fleets(draw: st.DrawFn) -> FleetStatus:
    organizations = draw(st.lists(_label_text, min_size=1, max_size=3))
    executors = [
        ExecutorStatus(
            uuid.uuid4(),
            draw(st.sampled_from(organizations)),
            draw(_label_text),
            draw(st.sampled_from(["agent", "operator"])),
            draw(st.booleans()),
            draw(st.one_of(st.none(), st.floats(0, 1e7, allow_nan=False))),
            draw(st.integers(0, 10_000)),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    processes = st.builds(
        ObservedProcess,
        role=st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,31}\Z"),
        status=st.sampled_from(ProcessStatus),
        height=_number.map(lambda n: None if n is None else int(n)),
        network_height=_number.map(lambda n: None if n is None else int(n)),
        peers=st.one_of(st.none(), st.integers(0, 500)),
        sync_progress=st.one_of(st.none(), st.floats(0, 1)),
        disk_total_bytes=_number.map(lambda n: None if n is None else int(n)),
        disk_available_bytes=_number.map(lambda n: None if n is None else int(n)),
    )
    nodes = [
        NodeStatus(
            id=uuid.uuid4(),
            organization=draw(st.sampled_from(organizations)),
            name=draw(_label_text),
            executor=draw(_label_text),
            chain=draw(_label_text),
            network=draw(_label_text),
            phase=draw(st.sampled_from(NodePhase)),
            stale=draw(st.booleans()),
            last_observed_age_seconds=draw(st.one_of(st.none(), st.floats(0, 1e9))),
            processes=tuple(draw(st.lists(processes, max_size=2))),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    return FleetStatus(executors=executors, nodes=nodes)


@settings(max_examples=200, deadline=None)
@given(status=_fleets())
@pytest.mark.parametrize("encode", [generate_latest, generate_latest_openmetrics])
def test_fleet_text_is_what_the_encoder_writes_of_the_families(
    encode: Callable[[CollectorRegistry], bytes], status: FleetStatus
) -> None:
    """The scrape's own writer of the fleet families (FleetText) and prometheus_client's
    encoders, text and OpenMetrics, agree byte for byte."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(status))
    text = FleetText()
    text.add_nodes(status.nodes[:1])  # in parts, as the endpoint adds them
    text.add_nodes(status.nodes[1:])
    text.add_executors(status.executors)
    expected = encode(registry).decode().removesuffix("# EOF\n")
    assert "".join(text.parts(encode)) == expected
    # Sent in parts of a few samples each, it is the same text.
    assert "".join(text.parts(encode, lines=2)) == expected
