"""The nodes page's stream (GET /nodes/stream): changed rows pushed as Server-Sent Events, on a
real server on SQLite and PostgreSQL, across two replicas, and ended by a shutdown."""

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from nodeplane.controlplane.store.notify import (
    MAX_NODES_PAYLOAD,
    MAX_NODES_PAYLOADS,
    NODES_CHANNEL,
    nodes_payloads,
    parse_nodes_payload,
)
from nodeplane.controlplane.web.live import RowFilter
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import act, deploy
from tests.support.fleet import FakeExecutor, Org, make_org, running
from tests.support.gql import Client
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PG_ADMIN_URL,
    ServerProcess,
    admin_token,
    create_pg_database,
    drop_pg_database,
)

pytestmark = pytest.mark.server

SESSION_COOKIE = "nodeplane_session"
# A change reaches a stream within one flush (~1 s); slack for a loaded machine.
ARRIVES_WITHIN = 10.0
# Long enough for two flushes after the commit: nothing arriving by then means nothing was sent.
QUIET_FOR = 2.5


@dataclass
class Stream:
    """One SSE client of /nodes/stream, read on its own thread."""

    base_url: str
    token: str
    query: str = ""
    events: "queue.Queue[tuple[str, Any]]" = field(default_factory=queue.Queue)
    ended: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    _opened: threading.Event = field(default_factory=threading.Event)
    _client: httpx.Client | None = None

    def open(self) -> "Stream":
        threading.Thread(target=self._read, daemon=True).start()
        assert self._opened.wait(10), "stream did not open"
        return self

    def _read(self) -> None:
        self._client = httpx.Client(cookies={SESSION_COOKIE: self.token}, timeout=None)
        try:
            with self._client.stream("GET", f"{self.base_url}/nodes/stream{self.query}") as r:
                self.status = r.status_code
                self._opened.set()
                name, data = "message", ""
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif line == "" and data:
                        self.events.put((name, json.loads(data)))
                        name, data = "message", ""
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()
            self.ended.set()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def rows(self, within: float) -> list[dict[str, Any]]:
        """Every row received until `within` seconds pass with nothing new."""
        found: list[dict[str, Any]] = []
        try:
            while True:
                name, data = self.events.get(timeout=within)
                if name == "rows":
                    found += data["rows"]
        except queue.Empty:
            return found

    def wait_row(self, node_id: str, until: Any = lambda row: True) -> dict[str, Any]:
        """The first row of `node_id` for which `until` holds."""
        deadline = time.monotonic() + ARRIVES_WITHIN
        while (left := deadline - time.monotonic()) > 0:
            try:
                name, data = self.events.get(timeout=left)
            except queue.Empty:
                break
            for row in data.get("rows", []) if name == "rows" else []:
                if row["id"] == node_id and until(row):
                    return dict(row)
        raise AssertionError(f"no row of {node_id} arrived within {ARRIVES_WITHIN} s")

    def drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return


@pytest.fixture
def stream(org: Org, server: ServerProcess) -> Iterator[Stream]:
    assert org.owner.token is not None
    opened = Stream(server.url, org.owner.token).open()
    assert opened.status == 200
    yield opened
    opened.close()


def _observation(revision: int, height: int) -> ObservedNodeState:
    return ObservedNodeState(revision=revision, processes=[running(height=height)])


def test_stream_needs_a_session(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/nodes/stream", timeout=10)
    assert response.status_code == 401


def test_rows_after_a_lifecycle_action_and_a_changed_observation_only(
    stream: Stream, org: Org, executor: FakeExecutor
) -> None:
    node_id = deploy(org.owner, executor, "live-a")["id"]
    assert stream.wait_row(node_id)["phase"] == "PROVISIONING"
    executor.sync({node_id: _observation(1, 100)})
    row = stream.wait_row(node_id, lambda r: r["phase"] == "RUNNING")
    assert row["observed"]["processes"][0]["height"] == 100

    act(org.owner, node_id, "STOP")
    row = stream.wait_row(node_id, lambda r: r["desiredState"] == "STOPPED")
    assert row["phase"] == "STOPPING" and row["revision"] == 2

    executor.sync({node_id: _observation(1, 101)})
    last = stream.wait_row(node_id, lambda r: r["observed"]["processes"][0]["height"] == 101)
    last = [last, *stream.rows(within=QUIET_FOR)][-1]  # anything still on its way
    # The same observation again only moves its report time: nothing is pushed for it. (The
    # server's heartbeat timeout is 3 s: the executor going offline between syncs, and back,
    # is pushed, each a change of `stale` only.)
    executor.sync({node_id: _observation(1, 101)})
    executor.sync({node_id: _observation(1, 101)})
    pushed = stream.rows(within=QUIET_FOR)
    for before, after in zip([last, *pushed], pushed, strict=False):
        assert after["stale"] != before["stale"], "an unchanged observation was pushed"
        assert after["observed"] == last["observed"]


def test_rows_when_the_executor_goes_offline_and_comes_back(
    stream: Stream, org: Org, executor: FakeExecutor
) -> None:
    """Staleness is shown from the executor's freshness: the heartbeat sweep marking it offline,
    and its next sync, each push its nodes' rows (the server's heartbeat timeout is 3 s)."""
    node_id = deploy(org.owner, executor, "live-s")["id"]
    executor.sync({node_id: _observation(1, 9)})
    assert stream.wait_row(node_id, lambda r: r["phase"] == "RUNNING")["stale"] is False
    assert stream.wait_row(node_id, lambda r: r["stale"])["executor"]["status"] == "OFFLINE"
    executor.sync({node_id: _observation(1, 9)})
    assert stream.wait_row(node_id, lambda r: not r["stale"])["executor"]["status"] == "ONLINE"


def test_filtered_stream_gets_membership_when_a_node_leaves_its_filter(
    org: Org, server: ServerProcess, executor: FakeExecutor
) -> None:
    node_id = deploy(org.owner, executor, "live-f")["id"]
    executor.sync({node_id: _observation(1, 7)})
    assert org.owner.token is not None
    running_only = Stream(server.url, org.owner.token, "?phase=running").open()
    try:
        running_only.drain()
        executor.sync({node_id: ObservedNodeState(revision=1, processes=[running(height=8)])})
        assert running_only.wait_row(node_id)["phase"] == "RUNNING"
        executor.sync(
            {
                node_id: ObservedNodeState(
                    revision=1,
                    processes=[ObservedProcess(role="node", status=ProcessStatus.SYNCING)],
                )
            }
        )
        deadline = time.monotonic() + ARRIVES_WITHIN
        while time.monotonic() < deadline:
            name, data = running_only.events.get(timeout=ARRIVES_WITHIN)
            if name == "membership" and node_id in data.get("ids", []):
                break
            assert not (name == "rows" and any(r["id"] == node_id for r in data["rows"])), (
                "a syncing node was sent to a page of running nodes"
            )
        else:
            raise AssertionError("no membership event for a node leaving the filter")
    finally:
        running_only.close()


def test_a_stream_never_sees_another_organizations_nodes(
    stream: Stream, org: Org, server: ServerProcess, system_admin: Client
) -> None:
    other = make_org(server.url, system_admin)
    theirs = FakeExecutor(server.url, other.executor_key())
    theirs.sync()
    their_node = deploy(other.owner, theirs, "live-b")["id"]
    theirs.sync({their_node: _observation(1, 5)})
    act(other.owner, their_node, "STOP")
    ours = FakeExecutor(server.url, org.executor_key())
    ours.sync()
    our_node = deploy(org.owner, ours, "live-own")["id"]
    seen: set[str] = set()
    deadline = time.monotonic() + ARRIVES_WITHIN
    while our_node not in seen and time.monotonic() < deadline:
        _, data = stream.events.get(timeout=ARRIVES_WITHIN)
        seen |= {r["id"] for r in data.get("rows", [])} | set(data.get("ids", []))
    assert our_node in seen
    seen |= {r["id"] for r in stream.rows(within=QUIET_FOR)}
    assert their_node not in seen


def test_stream_ends_when_the_server_stops(tmp_path: Path, backend: str) -> None:
    url = create_pg_database() if backend == "postgresql" else f"sqlite:///{tmp_path}/live.db"
    server = ServerProcess(database_url=url, workdir=tmp_path / "server")
    server.start()
    try:
        opened = Stream(server.url, admin_token(server.url)).open()
        assert opened.status == 200
        started = time.monotonic()
        server.stop()
        assert opened.ended.wait(10)
        # Ended by the server at once, not by uvicorn's graceful timeout cutting it off.
        assert time.monotonic() - started < 4
    finally:
        server.stop()
        if backend == "postgresql":
            drop_pg_database(url)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    url = create_pg_database()
    workdir = tmp_path_factory.mktemp("live-replicas")
    a = ServerProcess(database_url=url, workdir=workdir / "a")
    b = ServerProcess(database_url=url, workdir=workdir / "b")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()
        drop_pg_database(url)


def test_a_change_through_one_replica_reaches_a_stream_on_the_other(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    token = Client(a.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )["login"]["token"]
    org = make_org(a.url, Client(a.url, token))
    assert org.owner.token is not None
    on_b = Stream(b.url, org.owner.token).open()
    try:
        executor = FakeExecutor(a.url, org.executor_key())
        executor.sync()
        node_id = deploy(org.owner, executor, "live-r")["id"]
        executor.sync({node_id: _observation(1, 42)})
        row = on_b.wait_row(node_id, lambda r: r["phase"] == "RUNNING")
        assert row["observed"]["processes"][0]["height"] == 42
        act(org.owner, node_id, "STOP")
        assert on_b.wait_row(node_id, lambda r: r["desiredState"] == "STOPPED")["revision"] == 2
    finally:
        on_b.close()


def test_a_stream_takes_its_page_afresh_after_listen_reconnects(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    """Notifications sent while a replica's LISTEN connection was down are lost: when it is
    back, every open page of that replica is told to take itself afresh."""
    a, _ = replicas
    token = admin_token(a.url)
    on_a = Stream(a.url, token).open()
    try:
        name = a.database_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND query ILIKE 'LISTEN%%'",
                (name,),
            ).fetchall()
        assert killed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                event, data = on_a.events.get(timeout=1)
            except queue.Empty:
                continue
            if event == "membership" and data.get("all"):
                break
        else:
            raise AssertionError("no membership event after LISTEN reconnected")
    finally:
        on_a.close()


def test_a_notification_names_its_nodes_over_as_many_payloads_as_they_need() -> None:
    org_id, nodes = uuid.uuid4(), {uuid.uuid4() for _ in range(3)}
    [payload] = nodes_payloads(org_id, nodes)
    assert parse_nodes_payload(payload) == (org_id, frozenset(nodes))
    assert nodes_payloads(org_id, set()) == []
    # A batch of moved syncs stores up to 500 nodes: named, not "every node of the organization",
    # which would make every other worker forget what it kept of every executor's sync.
    batch = {uuid.uuid4() for _ in range(500)}
    payloads = nodes_payloads(org_id, batch)
    assert len(payloads) == 3 and all(len(p.encode()) < MAX_NODES_PAYLOAD < 8000 for p in payloads)
    named: set[uuid.UUID] = set()
    for payload in payloads:
        parsed = parse_nodes_payload(payload)
        assert parsed is not None and parsed[0] == org_id and parsed[1] is not None
        named |= parsed[1]
    assert named == batch
    full = MAX_NODES_PAYLOAD // 37 * MAX_NODES_PAYLOADS  # about as many as the cap holds
    many = {uuid.uuid4() for _ in range(full + 200)}
    assert nodes_payloads(org_id, many) == [f"{org_id}:*"]
    assert parse_nodes_payload(f"{org_id}:*") == (org_id, None)
    assert parse_nodes_payload("not-a-uuid:*") is None


def test_a_write_of_many_nodes_notifies_them_by_name() -> None:
    from nodeplane.controlplane.store.database import UnitOfWork, _notices

    org_id = uuid.uuid4()
    batch = {uuid.uuid4() for _ in range(500)}
    uow = UnitOfWork(session=None)  # type: ignore[arg-type]  # _notices reads no session
    uow.nodes_changed(org_id, batch)
    notices = _notices(uow)
    assert {channel for channel, _ in notices} == {NODES_CHANNEL}
    assert all(not payload.endswith(":*") for _, payload in notices)
    assert set().union(*(parse_nodes_payload(p)[1] or set() for _, p in notices)) == batch


def test_a_filter_matches_rows_as_the_pages_query_does() -> None:
    row = {"name": "LTC-main", "chain": "litecoin", "phase": "RUNNING", "executorId": "e1"}
    assert RowFilter().matches(row)
    assert RowFilter(name="ltc", name_ignores_case=True).matches(row)  # SQLite's LIKE
    assert not RowFilter(name="ltc").matches(row)  # PostgreSQL's
    assert RowFilter(chain="litecoin", phase="RUNNING", executor_id="e1").matches(row)
    assert not RowFilter(phase="STOPPED").matches(row)
    assert not RowFilter(executor_id="e2").matches(row)
