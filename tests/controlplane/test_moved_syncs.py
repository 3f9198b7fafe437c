"""Syncs whose metric values alone moved, stored a batch at a time (services/moved_syncs.py).

Against a real server on SQLite and PostgreSQL: many executors' moved syncs sent at once are
stored exactly (every answered value readable through the API, every node's revision kept) in
fewer transactions than syncs; a sync the batch cannot decide (a status changed, a node held by
another transaction) is handed to the write path and stored there, and a held row never makes
the rest of a batch wait for it.
"""

import functools
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeplane.controlplane.store.database import libpq_conninfo
from nodeplane.protocol import INSTANCE_HEADER, ObservedNodeState, ObservedProcess, ProcessStatus
from nodeplane.protocol.executor_documents import SYNC_EXECUTOR
from tests.conftest import BACKENDS
from tests.support.calls import deploy
from tests.support.fleet import CAPABILITIES, FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token, backend_server

pytestmark = pytest.mark.server

METRICS_TOKEN = "metrics-token-moved-0123456789"
EXECUTORS = 24
NODES = 3


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"moved-{request.param}")
    with backend_server(request.param, workdir, {"NODEPLANE_METRICS_TOKEN": METRICS_TOKEN}) as proc:
        yield proc


class Host:
    """One executor with its nodes, speaking the executors' own sync document over raw HTTP
    (the direct path, as an agent does) on a connection of its own."""

    def __init__(self, server: ServerProcess, org: Org) -> None:
        self.key = key = org.executor_key()
        self.instance = uuid.uuid4()
        agent = FakeExecutor(server.url, key, instance_id=self.instance)
        agent.sync()
        self.name = agent.name
        self.node_ids = [deploy(org.owner, agent, f"n{i}")["id"] for i in range(NODES)]
        self.headers = {"authorization": f"Bearer {key}", INSTANCE_HEADER: str(self.instance)}
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def sync(self, height: int, *options: Any, **named: Any) -> dict[str, Any]:
        """`post`, which must be answered with no error and nothing rejected; the answer's
        syncExecutor."""
        answer = self.post(height, *options, **named)
        assert "errors" not in answer, answer
        sync: dict[str, Any] = answer["data"]["syncExecutor"]
        assert sync["rejected"] == [], sync
        return sync

    def post(
        self,
        height: int,
        status: ProcessStatus = ProcessStatus.RUNNING,
        timeout: float = 30,
        free_disk: int = 2**40,
    ) -> dict[str, Any]:
        """Report every node at `height` and `status`, and the host's `free_disk`; the whole
        answer, errors included."""
        observed = ObservedNodeState(
            revision=1,
            processes=[ObservedProcess(role="node", status=status, height=height, peers=8)],
        ).to_wire()
        body = {
            "name": self.name,
            "kind": "agent",
            "version": "0.1.0-test",
            "capabilities": CAPABILITIES.to_wire(),
            "resources": {"diskTotalBytes": 2**41, "diskAvailableBytes": free_disk},
            "nodes": [{"nodeId": nid, "observed": observed} for nid in self.node_ids],
        }
        response = self.http.post(
            "/graphql",
            json={"query": SYNC_EXECUTOR, "variables": {"input": body}},
            headers=self.headers,
            timeout=timeout,
        )
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def org(server: ServerProcess) -> Org:
    return make_org(server.url, Client(server.url, admin_token(server.url)))


@pytest.fixture(scope="module")
def hosts(server: ServerProcess, org: Org) -> Iterator[list[Host]]:
    made = [Host(server, org) for _ in range(EXECUTORS)]
    for host in made:
        host.sync(1)  # what the moved syncs below move from
    yield made
    for host in made:
        host.http.close()


def counts(server: ServerProcess) -> dict[str, float]:
    """Syncs by outcome, and the batches of moved syncs ("batches")."""
    text = httpx.get(
        f"{server.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nodeplane_syncs_total":
                out[sample.labels["outcome"]] = sample.value
            elif sample.name == "nodeplane_moved_sync_batches_total":
                out["batches"] = sample.value
    return out


def stored(org: Org, node_id: str) -> tuple[int, int, str]:
    """The node's stored height, its spec's revision and its phase, read through the API."""
    node = org.owner(
        "query($id: UUID!) { node(id: $id) { revision phase observed } }", {"id": node_id}
    )["node"]
    return node["observed"]["processes"][0]["height"], node["revision"], node["phase"]


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("moved", "written", "batches")}


def test_many_executors_moved_at_once_are_stored_exactly_in_fewer_transactions(
    server: ServerProcess, org: Org, hosts: list[Host]
) -> None:
    for round_ in range(2, 5):
        before = counts(server)
        start = threading.Barrier(len(hosts))
        with ThreadPoolExecutor(len(hosts)) as pool:
            answers = list(pool.map(functools.partial(_at_once, start=start, height=round_), hosts))
        after = counts(server)
        assert [a["executor"]["name"] for a in answers] == [h.name for h in hosts]
        for host in hosts:
            for node_id in host.node_ids:
                assert stored(org, node_id) == (round_, 1, "RUNNING")
        disks = free_disk(org)
        assert {disks[h.name] for h in hosts} == {2**40 - round_}
        moved = delta(before, after)
        assert moved["moved"] == len(hosts), moved
        assert moved["written"] == 0, moved
        # Syncs that arrived while a batch was being stored waited for the next one.
        assert moved["batches"] < len(hosts), moved


def _at_once(host: Host, start: threading.Barrier, height: int) -> dict[str, Any]:
    """A sync whose metric values moved, the host's free disk with them, as an agent's do."""
    start.wait()
    return host.sync(height, free_disk=2**40 - height)


def free_disk(org: Org) -> dict[str, int]:
    """Each executor's stored free disk, by name."""
    executors = org.owner("{ executors { name resources } }")["executors"]
    return {e["name"]: e["resources"].get("diskAvailableBytes") for e in executors}


def test_a_sync_that_says_more_than_metric_values_is_handed_to_the_write_path(
    server: ServerProcess, org: Org, hosts: list[Host]
) -> None:
    """Sent at once, a status change among moved syncs: each is decided as the write path
    would, the status change written with its phase, the others stored by the batch."""
    stopping, others = hosts[0], hosts[1:]
    before = counts(server)
    start = threading.Barrier(len(hosts))

    def send(host: Host) -> dict[str, Any]:
        start.wait()
        status = ProcessStatus.STOPPED if host is stopping else ProcessStatus.RUNNING
        return host.sync(50, status)

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(send, hosts))
    moved = delta(before, counts(server))
    assert (moved["moved"], moved["written"]) == (len(others), 1), moved
    assert {stored(org, nid) for nid in stopping.node_ids} == {(50, 1, "ERROR")}
    assert {stored(org, nid) for h in others for nid in h.node_ids} == {(50, 1, "RUNNING")}
    stopping.sync(51)  # running again: written too (its status moved back)
    assert {stored(org, nid) for nid in stopping.node_ids} == {(51, 1, "RUNNING")}


def test_a_node_row_held_elsewhere_sends_only_its_sync_to_the_write_path(
    server: ServerProcess, org: Org, hosts: list[Host]
) -> None:
    """A node row locked by another transaction: its executor's moved sync waits for it on
    the write path, and is stored once it is free; another executor's moved sync, sent while
    the row is held, is stored by a batch meanwhile (the batch passes over the held row)."""
    if not server.database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's")
    held, free = hosts[2], hosts[3]
    before = counts(server)
    with psycopg.connect(libpq_conninfo(server.database_url)) as conn:
        conn.execute("SELECT id FROM nodes WHERE id = %s FOR UPDATE", (held.node_ids[1],))
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(held.sync, 60)
            free.sync(60, timeout=20)  # would wait behind the held row if the batch did
            assert {stored(org, nid) for nid in free.node_ids} == {(60, 1, "RUNNING")}
            assert not waiting.done()
            conn.rollback()  # frees the row
            waiting.result(timeout=30)
    assert {stored(org, nid) for nid in held.node_ids} == {(60, 1, "RUNNING")}
    moved = delta(before, counts(server))
    assert (moved["moved"], moved["written"]) == (1, 1), moved


def test_a_moved_sync_from_a_replaced_agent_process_is_refused_and_stores_nothing(
    server: ServerProcess, org: Org, hosts: list[Host]
) -> None:
    """Once another agent process has taken the executor over, the old one's moved values are
    not the batch's to store: handed back, they are refused as the write path refuses any
    sync of a process that is not the executor's live instance."""
    host = hosts[4]
    host.sync(70)
    successor = FakeExecutor(
        server.url,
        host.key,
        name=host.name,
        instance_id=uuid.uuid4(),
        previous_instance_ids=[host.instance],
    )
    observed = ObservedNodeState(
        revision=1,
        processes=[ObservedProcess(role="node", status=ProcessStatus.RUNNING, height=71)],
    )
    successor.sync({nid: observed for nid in host.node_ids})
    before = counts(server)
    answer = host.post(72)
    assert answer["errors"][0]["extensions"]["code"] == "executor_instance_conflict", answer
    assert {stored(org, nid) for nid in host.node_ids} == {(71, 1, "RUNNING")}
    assert delta(before, counts(server))["moved"] == 0
