"""`GET /metrics` against real servers: values equal the API's for the same nodes and executors,
only the metrics token (or the metrics socket) opens it, request latencies and held polls count,
and `--workers 2` on PostgreSQL reports every worker's requests (controlplane/metrics/)."""

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from nodeplane.protocol import NodePhase, ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import act, deploy, wait_until
from tests.support.fleet import FakeExecutor, Org, make_org, running, unique
from tests.support.gql import Client
from tests.support.server import (
    ServerProcess,
    admin_token,
    create_pg_database,
    drop_pg_database,
    free_port,
)

pytestmark = pytest.mark.server

TOKEN = "metrics-token-0123456789abcdef"
HEARTBEAT_TIMEOUT = 3.0
POLL_WAIT = 5.0

NODES = """
query { nodes(first: 200) { items { id name chain network phase stale observedAt observed
  executor { name status } } } }"""
EXECUTORS = "query { executors { id name kind status nodeCount lastSyncAt } }"
CREATE_KEY = (
    "mutation($n: String!, $k: ApiKeyKind!) { createApiKey(name: $n, kind: $k) { secret } }"
)


class MetricsServer:
    """A server with a metrics token and a metrics socket; `scrape` reads and parses /metrics."""

    def __init__(self, process: ServerProcess, metrics_port: int) -> None:
        self.process = process
        self.url = process.url
        self.listener_url = f"http://127.0.0.1:{metrics_port}"
        self.admin = Client(self.url, admin_token(self.url))

    def get(self, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}/metrics", headers=headers or {}, timeout=30, **kwargs)

    def scrape(self, via_listener: bool = False) -> list[Sample]:
        if via_listener:
            response = httpx.get(f"{self.listener_url}/metrics", timeout=30)
        else:
            response = self.get({"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def start_metrics_server(
    workdir: Path,
    database_url: str,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[ServerProcess, int]:
    metrics_port = free_port()
    process = ServerProcess(
        database_url=database_url,
        workdir=workdir,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        max_poll_wait=POLL_WAIT,
        extra_env={"NODEPLANE_METRICS_TOKEN": TOKEN, **(extra_env or {})},
        extra_args=["--metrics-listen", f"127.0.0.1:{metrics_port}", *(extra_args or [])],
    )
    process.start()
    return process, metrics_port


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def metrics_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsServer]:
    workdir = tmp_path_factory.mktemp(f"metrics-{request.param}")
    url = (
        f"sqlite:///{workdir / 'nodeplane.db'}"
        if request.param == "sqlite"
        else create_pg_database()
    )
    process, metrics_port = start_metrics_server(workdir, url)
    try:
        yield MetricsServer(process, metrics_port)
    finally:
        process.stop()
        if request.param == "postgresql":
            drop_pg_database(url)


@pytest.fixture
def metrics_org(metrics_server: MetricsServer) -> Org:
    return make_org(metrics_server.url, metrics_server.admin)


def find(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples named `name` whose labels include `labels`."""
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def one(samples: list[Sample], name: str, **labels: str) -> float:
    found = find(samples, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0].value


def request_count(samples: list[Sample], **labels: str) -> float:
    return sum(
        s.value for s in find(samples, "nodeplane_http_request_duration_seconds_count", **labels)
    )


# ---- values ----------------------------------------------------------------------------------


def test_node_and_executor_values_equal_the_api(
    metrics_server: MetricsServer, metrics_org: Org
) -> None:
    org = metrics_org
    ex = FakeExecutor(metrics_server.url, org.executor_key())
    ex.sync()
    quiet = FakeExecutor(metrics_server.url, org.executor_key("quiet"))
    quiet.sync()
    synced = deploy(org.owner, ex, unique("synced"))["id"]
    stopped = deploy(org.owner, ex, unique("stopped"))["id"]
    unseen = deploy(org.owner, ex, unique("unseen"))["id"]
    abandoned = deploy(org.owner, quiet, unique("abandoned"))["id"]
    quiet.sync({abandoned: ObservedNodeState(revision=1, processes=[running(height=7)])})
    # `quiet` stops syncing: past the heartbeat timeout it is offline and its node stale.
    time.sleep(HEARTBEAT_TIMEOUT + 0.5)
    ex.sync(
        {
            synced: ObservedNodeState(
                revision=1,
                processes=[
                    running(
                        height=120,
                        network_height=130,
                        peers=8,
                        sync_progress=0.5,
                        disk_total_bytes=1000,
                        disk_available_bytes=250,
                    ),
                    running(role="sidecar", peers=0),
                ],
            ),
            stopped: ObservedNodeState(
                revision=1, processes=[ObservedProcess(role="node", status=ProcessStatus.STOPPED)]
            ),
        }
    )

    samples = metrics_server.scrape()
    api_nodes = {n["id"]: n for n in org.owner(NODES)["nodes"]["items"]}
    api_executors = {e["name"]: e for e in org.owner(EXECUTORS)["executors"]}

    assert set(api_nodes) == {synced, stopped, unseen, abandoned}
    assert {n["phase"] for n in api_nodes.values()} >= {"RUNNING", "ERROR", "PROVISIONING"}
    for node_id, node in api_nodes.items():
        labels = {
            "organization": org.name,
            "node_id": node_id,
            "node": node["name"],
            "executor": node["executor"]["name"],
            "chain": node["chain"],
            "network": node["network"],
        }
        phases = {
            s.labels["phase"]: s.value for s in find(samples, "nodeplane_node_phase", **labels)
        }
        assert phases == {p.value: float(p.value == node["phase"].lower()) for p in NodePhase}
        assert one(samples, "nodeplane_node_stale", **labels) == float(node["stale"])
        ages = find(samples, "nodeplane_node_last_observed_age_seconds", **labels)
        if node["observedAt"] is None:
            assert ages == []
        else:
            assert len(ages) == 1 and 0 <= ages[0].value < 60
        processes = (node["observed"] or {}).get("processes", [])
        for metric, key in (
            ("nodeplane_node_height", "height"),
            ("nodeplane_node_network_height", "networkHeight"),
            ("nodeplane_node_peers", "peers"),
            ("nodeplane_node_sync_progress", "syncProgress"),
            ("nodeplane_node_disk_total_bytes", "diskTotalBytes"),
        ):
            expected = {p["role"]: p[key] for p in processes if p.get(key) is not None}
            got = {s.labels["role"]: s.value for s in find(samples, metric, **labels)}
            assert got == expected, metric
        used = {
            p["role"]: p["diskTotalBytes"] - p["diskAvailableBytes"]
            for p in processes
            if p.get("diskTotalBytes") is not None and p.get("diskAvailableBytes") is not None
        }
        got_used = find(samples, "nodeplane_node_disk_used_bytes", **labels)
        assert {s.labels["role"]: s.value for s in got_used} == used

    # The numbers themselves, not only their agreement.
    assert one(samples, "nodeplane_node_height", node_id=synced, role="node") == 120
    assert one(samples, "nodeplane_node_peers", node_id=synced, role="sidecar") == 0
    assert one(samples, "nodeplane_node_disk_used_bytes", node_id=synced) == 750
    assert one(samples, "nodeplane_node_phase", node_id=stopped, phase="error") == 1
    assert one(samples, "nodeplane_node_phase", node_id=unseen, phase="provisioning") == 1
    assert one(samples, "nodeplane_node_stale", node_id=abandoned) == 1

    assert set(api_executors) == {ex.name, quiet.name}
    for name, executor in api_executors.items():
        labels = {"organization": org.name, "executor": name, "kind": executor["kind"]}
        online = executor["status"] == "ONLINE"
        assert one(samples, "nodeplane_executor_online", **labels) == float(online)
        assert one(samples, "nodeplane_executor_nodes", **labels) == executor["nodeCount"]
        age = one(samples, "nodeplane_executor_last_sync_age_seconds", **labels)
        assert (age < HEARTBEAT_TIMEOUT) == online
    assert one(samples, "nodeplane_executor_online", executor=quiet.name) == 0
    assert one(samples, "nodeplane_executor_online", executor=ex.name) == 1

    # The metrics socket answers the same fleet, without the token.
    through_listener = metrics_server.scrape(via_listener=True)
    assert one(through_listener, "nodeplane_node_height", node_id=synced, role="node") == 120


def test_metrics_cover_every_organization(metrics_server: MetricsServer) -> None:
    orgs = [make_org(metrics_server.url, metrics_server.admin) for _ in range(2)]
    names = []
    for org in orgs:
        ex = FakeExecutor(metrics_server.url, org.executor_key())
        ex.sync()
        names.append(ex.name)
    samples = metrics_server.scrape()
    for org, name in zip(orgs, names, strict=True):
        assert one(samples, "nodeplane_executor_online", organization=org.name, executor=name) == 1


# ---- access ----------------------------------------------------------------------------------


def test_only_the_metrics_token_opens_metrics(
    metrics_server: MetricsServer, metrics_org: Org
) -> None:
    org = metrics_org
    session = org.owner.token
    assert session is not None
    personal = org.owner(CREATE_KEY, {"n": "p", "k": "PERSONAL"})["createApiKey"]["secret"]
    executor_key = org.executor_key()
    admin_session = metrics_server.admin.token
    refused = {
        "no credentials": {},
        "a wrong token": {"authorization": "Bearer " + TOKEN[:-1] + "x"},
        "the token's prefix": {"authorization": "Bearer " + TOKEN[:8]},
        "the token, not as Bearer": {"authorization": TOKEN},
        "an owner's session": {"authorization": f"Bearer {session}"},
        "the system admin's session": {"authorization": f"Bearer {admin_session}"},
        "a personal API key": {"authorization": f"Bearer {personal}"},
        "an executor key": {"authorization": f"Bearer {executor_key}"},
        "a session cookie": {"cookie": f"nodeplane_session={session}"},
    }
    for what, headers in refused.items():
        response = metrics_server.get(headers)
        assert response.status_code == 401, what
        assert response.headers["www-authenticate"].startswith("Bearer"), what
        assert "nodeplane_" not in response.text, what

    ok = metrics_server.get({"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert "# TYPE nodeplane_spec_polls_held gauge" in ok.text
    assert metrics_server.get({"authorization": f"bearer  {TOKEN}"}).status_code == 200

    # The metrics socket serves /metrics only: not the API, the UI or health.
    for path in ("/graphql", "/nodes", "/healthz", "/metrics/x"):
        assert httpx.get(metrics_server.listener_url + path).status_code == 404, path
    assert httpx.post(metrics_server.listener_url + "/metrics").status_code == 405


def test_metrics_answer_head_and_openmetrics(
    metrics_server: MetricsServer, metrics_org: Org
) -> None:
    """The streamed body: HEAD has the headers and nothing else; OpenMetrics, asked for, ends
    with its one `# EOF`, after the fleet's families and the process's own."""
    bearer = {"authorization": f"Bearer {TOKEN}"}
    head = httpx.head(f"{metrics_server.url}/metrics", headers=bearer, timeout=30)
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/plain")
    assert head.content == b""

    accept = {**bearer, "accept": "application/openmetrics-text; version=1.0.0"}
    response = metrics_server.get(accept)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n") and response.text.count("# EOF") == 1
    families = {f.name for f in openmetrics_families(response.text)}
    assert {"nodeplane_node_phase", "nodeplane_executor_online", "nodeplane_spec_polls_held"} <= (
        families
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_without_a_token_or_socket_metrics_is_not_there(server: ServerProcess) -> None:
    # The shared server is started with neither NODEPLANE_METRICS_TOKEN nor --metrics-listen.
    assert httpx.get(f"{server.url}/metrics").status_code == 404
    response = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


def test_a_short_token_is_refused_at_start(tmp_path: Path) -> None:
    process = ServerProcess(
        database_url=f"sqlite:///{tmp_path / 'nodeplane.db'}",
        workdir=tmp_path,
        extra_env={"NODEPLANE_METRICS_TOKEN": "short"},
    )
    with pytest.raises(RuntimeError, match="exited with 2"):
        process.start(timeout=30)
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "NODEPLANE_METRICS_TOKEN must be at least 16 characters" in log


# ---- requests and polls ----------------------------------------------------------------------


def test_request_latencies_count_by_route_and_operation(
    metrics_server: MetricsServer, metrics_org: Org
) -> None:
    ex = FakeExecutor(metrics_server.url, metrics_org.executor_key())
    ex.sync()
    before = metrics_server.scrape()
    for _ in range(3):
        ex.sync()
    ex.poll()
    httpx.get(f"{metrics_server.url}/no-such-page-{unique('x')}")
    httpx.get(f"{metrics_server.url}/nodes/{unique('n')}")
    Client(metrics_server.url)("query { __typename }")
    # A page runs GraphQL queries of its own: they do not name the page's request.
    page = httpx.get(
        f"{metrics_server.url}/nodes",
        cookies={"nodeplane_session": metrics_org.owner.token or ""},
    )
    assert page.status_code == 200
    after = metrics_server.scrape()

    def grew(**labels: str) -> float:
        return request_count(after, **labels) - request_count(before, **labels)

    assert grew(route="/graphql", method="POST", operation="syncExecutor") == 3
    assert grew(route="/graphql", operation="executorSpecs") == 1
    assert grew(route="unmatched") >= 1
    assert grew(route="/nodes/{node_id}", method="GET") >= 1
    assert grew(route="/graphql", operation="other") >= 1
    assert grew(route="/nodes", method="GET", operation="") == 1
    assert [
        s
        for s in find(after, "nodeplane_http_request_duration_seconds_count", route="/nodes")
        if s.labels["operation"]
    ] == []
    # The scrape before this one was timed too, under its route.
    assert grew(route="/metrics") >= 1
    # No raw path or caller's name reaches a label.
    for sample in after:
        for value in sample.labels.values():
            assert "no-such-page" not in value and "__typename" not in value
    # Buckets are cumulative and end in the count.
    buckets = find(
        after,
        "nodeplane_http_request_duration_seconds_bucket",
        route="/graphql",
        operation="syncExecutor",
    )
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == request_count(after, route="/graphql", operation="syncExecutor")


def test_held_polls_gauge_follows_a_held_poll(
    metrics_server: MetricsServer, metrics_org: Org
) -> None:
    ex = FakeExecutor(metrics_server.url, metrics_org.executor_key())
    ex.sync()

    def held() -> float:
        return one(metrics_server.scrape(), "nodeplane_spec_polls_held")

    assert held() == 0
    answer: list[Any] = []
    poll = threading.Thread(target=lambda: answer.append(ex.poll(wait=POLL_WAIT)))
    started = time.monotonic()
    poll.start()
    wait_until(lambda: held() == 1, timeout=POLL_WAIT, what="the poll to be held")
    # A commit for the executor answers the poll.
    node_id = deploy(metrics_org.owner, ex, unique("wake"))["id"]
    poll.join(timeout=POLL_WAIT + 5)
    assert [s.node_id for s in answer[0]] == [uuid.UUID(node_id)]
    assert time.monotonic() - started < POLL_WAIT
    assert held() == 0


def test_a_renewed_poll_reads_nothing_until_a_write_changes_its_executor(
    metrics_server: MetricsServer, metrics_org: Org
) -> None:
    ex = FakeExecutor(metrics_server.url, metrics_org.executor_key())
    ex.sync()
    nid = deploy(metrics_org.owner, ex, unique("kept"))["id"]
    absent = str(uuid.uuid4())
    wait = 0.3  # a held poll's renewal, shortened: nothing comes while it is held

    def looks() -> dict[str, float]:
        samples = metrics_server.scrape()
        return {
            source: sum(
                s.value for s in find(samples, "nodeplane_spec_poll_looks_total", source=source)
            )
            for source in ("kept", "database")
        }

    def poll(known: dict[str, int], wait: float, **kw: Any) -> tuple[list[Any], dict[str, float]]:
        before = looks()
        answer = [(str(s.node_id), s.revision, s.deleted) for s in ex.poll(known, wait, **kw)]
        after = looks()
        return answer, {k: after[k] - before[k] for k in after}

    assert poll({}, wait) == ([(nid, 1, False)], {"kept": 0, "database": 1})
    # Renewals: what the poll before read, unchanged since, decides; a node the executor holds
    # that is gone is answered from it too.
    assert poll({nid: 1}, wait) == ([], {"kept": 1, "database": 0})
    assert poll({nid: 1, absent: 4}, wait) == ([(absent, 4, True)], {"kept": 1, "database": 0})
    # A poll that does not wait reads (on PostgreSQL a commit's wake-up may be on its way).
    assert poll({nid: 1}, 0) == ([], {"kept": 0, "database": 1})

    # A write for the executor: the next poll returns it (on PostgreSQL, the wake-up may reach
    # the held poll after it recalled the look; it then reads).
    act(metrics_org.owner, nid, "STOP")
    answer, counted = poll({nid: 1}, 5.0)
    assert answer == [(nid, 2, False)] and counted["database"] == 1
    assert poll({nid: 2}, wait) == ([], {"kept": 1, "database": 0})

    metrics_org.owner("mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }", {"id": nid})
    answer, counted = poll({nid: 2}, 5.0)
    assert answer == [(nid, 2, True)] and counted["database"] == 1  # a tombstone
    assert poll({nid: 2}, wait, deleted={nid}) == ([], {"kept": 1, "database": 0})
    assert ex.confirm_teardown(nid)
    wait_until(lambda: poll({nid: 2}, wait, deleted={nid})[1]["database"] == 1, timeout=10)
    assert poll({nid: 2}, wait) == ([(nid, 2, True)], {"kept": 1, "database": 0})  # gone


# ---- workers ---------------------------------------------------------------------------------


def test_two_workers_on_postgresql_report_every_workers_requests(tmp_path: Path) -> None:
    url = create_pg_database()
    shared = tmp_path / "worker-metrics"
    shared.mkdir()
    (shared / "histogram_1.db").write_bytes(b"left by an earlier run")
    process, metrics_port = start_metrics_server(
        tmp_path, url, ["--workers", "2"], {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    )
    try:
        server = MetricsServer(process, metrics_port)
        org = make_org(server.url, server.admin)
        ex = FakeExecutor(server.url, org.executor_key())
        ex.sync()
        node_id = deploy(org.owner, ex, unique("w"))["id"]
        syncs = 12
        for _ in range(syncs - 2):
            ex.sync()  # a new connection each: the kernel spreads them over both workers
        ex.sync({node_id: ObservedNodeState(revision=1, processes=[running(height=42)])})
        # The earlier run's file was cleared at start; each worker writes its own.
        files = sorted(f.name for f in shared.glob("histogram_*.db"))
        assert len(files) == 2 and "histogram_1.db" not in files, files
        # Whichever worker answers a scrape (each a new connection), it reports both workers'
        # requests, and the same fleet.
        for via_listener in (False, True) * 4:
            samples = server.scrape(via_listener=via_listener)
            assert request_count(samples, operation="syncExecutor") == syncs
            assert one(samples, "nodeplane_node_height", node_id=node_id) == 42
            assert one(samples, "nodeplane_spec_polls_held") == 0
        # One worker's own process_* collectors would misreport the server: they are left out.
        assert find(samples, "process_cpu_seconds_total") == []
    finally:
        process.stop()
        drop_pg_database(url)
