"""Syncs that need the database are admitted a few at a time (controlplane/admission.py).

Against a real server on SQLite and PostgreSQL, with one such sync at a time and a short line:
a fleet's first syncs sent at once are each answered either as usual or, before any work was
done for it, with `unavailable` and `retryAfterSeconds`, which the executors' own client reads;
a refused executor is not registered, and once each sends again every executor is registered and
its nodes' observations stored exactly. On PostgreSQL, with the one place held by a write that
waits on a row lock: a second write is refused once its wait runs out, while a heartbeat that
repeats itself is answered at once, since it never queues.
"""

import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeplane.controlplane.store.database import libpq_conninfo
from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.conftest import BACKENDS
from tests.support.calls import deploy
from tests.support.fleet import FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token, backend_server

pytestmark = pytest.mark.server

METRICS_TOKEN = "metrics-token-admission-0123456789"
MAX_WAIT = 0.2


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"admission-{request.param}")
    env = {
        "NODEPLANE_METRICS_TOKEN": METRICS_TOKEN,
        "NODEPLANE_SYNC_WRITES_AT_ONCE": "1",
        "NODEPLANE_SYNC_WRITE_MAX_WAIT": str(MAX_WAIT),
    }
    with backend_server(request.param, workdir, env) as proc:
        yield proc


@pytest.fixture(scope="module")
def org(server: ServerProcess) -> Org:
    return make_org(server.url, Client(server.url, admin_token(server.url)))


def shed(server: ServerProcess) -> float:
    """Syncs refused so far with `unavailable` because the line was full."""
    text = httpx.get(
        f"{server.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nodeplane_syncs_total" and sample.labels["outcome"] == "shed":
                return sample.value
    return 0.0


def observed(height: int, status: ProcessStatus = ProcessStatus.RUNNING) -> ObservedNodeState:
    return ObservedNodeState(
        revision=1, processes=[ObservedProcess(role="node", status=status, height=height)]
    )


def registered(org: Org) -> set[str]:
    return {e["name"] for e in org.owner("{ executors { name } }")["executors"]}


@contextmanager
def writes_held(server: ServerProcess) -> Iterator[None]:
    """Another program holds what a first sync writes: SQLite's one write lock, or on
    PostgreSQL the executors table against any change. Reads go on."""
    url = server.database_url
    if url.startswith("sqlite"):
        blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=0)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    with psycopg.connect(libpq_conninfo(url)) as conn:
        conn.execute("LOCK TABLE executors IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def test_a_fleets_first_syncs_at_once_are_answered_or_refused_with_a_hint_and_none_is_lost(
    server: ServerProcess, org: Org
) -> None:
    """Sixteen first syncs at once while what they write is held elsewhere: the one admitted
    waits for it in its place, the fifteen behind it are refused when their 0.2 s have run
    out, and nothing of theirs is stored; sent again, each is admitted."""
    fleet = [FakeExecutor(server.url, org.executor_key(f"first-{i}")) for i in range(16)]
    before = shed(server)

    def first_sync(executor: FakeExecutor) -> ControlPlaneError | None:
        try:
            executor.sync()
        except ControlPlaneError as error:
            return error
        return None

    with ThreadPoolExecutor(len(fleet)) as pool:
        with writes_held(server):
            sent = [pool.submit(first_sync, e) for e in fleet]
            # All but the admitted one are answered while the writes are held...
            deadline = time.monotonic() + 30
            while sum(f.done() for f in sent) < len(fleet) - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sum(f.done() for f in sent) == len(fleet) - 1
        outcomes = [f.result(timeout=30) for f in sent]  # ...and it once they are free
    refused = [e for e, error in zip(fleet, outcomes, strict=True) if error is not None]
    assert len(refused) == len(fleet) - 1
    for error in outcomes:
        if error is not None:
            assert error.code == "unavailable", error
            assert error.retry_after is not None and error.retry_after >= 1, error
            assert "retry in" in error.message
    assert shed(server) - before == len(refused)
    names = registered(org)
    assert not names & {e.name for e in refused}, "a refused first sync registered its executor"
    assert {e.name for e in fleet if e not in refused} <= names
    # Sent again one at a time (as their backoffs spread them), each is admitted.
    for executor in refused:
        executor.sync()
    assert {e.name for e in fleet} <= registered(org)
    # And each executor's nodes are observed exactly, the refused ones' included.
    observers = [e for e in fleet if e not in refused] + refused[:4]
    node_ids = {e.name: deploy(org.owner, e, "n0")["id"] for e in observers}
    for executor in observers:
        executor.sync({node_ids[executor.name]: observed(7)})
    for node_id in node_ids.values():
        node = org.owner("query($id: UUID!) { node(id: $id) { observed } }", {"id": node_id})
        assert node["node"]["observed"]["processes"][0]["height"] == 7


def test_a_repeated_heartbeat_never_waits_in_the_line_of_writes(
    server: ServerProcess, org: Org
) -> None:
    """The one place is held by a status change that waits on its node's row, locked from
    another connection: a second status change waits its 0.2 s and is refused, a heartbeat
    that repeats itself is answered meanwhile, and once the row is free the first is stored."""
    if not server.database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's")
    blocked, refused, steady = (
        # Agent processes name themselves, as agents do: a sync without an instance is never
        # steady.
        FakeExecutor(server.url, org.executor_key(f"{role}-key"), instance_id=uuid.uuid4())
        for role in ("a", "b", "c")
    )
    nodes = {}
    for executor in (blocked, refused, steady):
        executor.sync()
        nodes[executor.name] = deploy(org.owner, executor, "n0")["id"]
        executor.sync({nodes[executor.name]: observed(1)})
    steady.sync({nodes[steady.name]: observed(1)})  # its repeats are answered from memory now
    before = shed(server)
    with psycopg.connect(libpq_conninfo(server.database_url)) as conn:
        conn.execute("SELECT id FROM nodes WHERE id = %s FOR UPDATE", (nodes[blocked.name],))
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                blocked.sync, {nodes[blocked.name]: observed(2, ProcessStatus.STOPPED)}
            )
            # The status change is handed to the write path, takes the one place and waits for
            # the row.
            waiting_on_lock(conn, server)
            with pytest.raises(ControlPlaneError) as raised:
                refused.sync({nodes[refused.name]: observed(2, ProcessStatus.STOPPED)})
            assert raised.value.code == "unavailable"
            assert raised.value.retry_after is not None
            assert shed(server) - before == 1
            for _ in range(5):
                steady.sync({nodes[steady.name]: observed(1)})
            assert not waiting.done()
            conn.rollback()  # frees the row
            waiting.result(timeout=30)
    refused.sync({nodes[refused.name]: observed(2, ProcessStatus.STOPPED)})
    for executor in (blocked, refused):
        node = org.owner(
            "query($id: UUID!) { node(id: $id) { phase observed } }", {"id": nodes[executor.name]}
        )["node"]
        assert node["observed"]["processes"][0]["status"] == ProcessStatus.STOPPED.value, node


def waiting_on_lock(conn: psycopg.Connection[tuple[object, ...]], server: ServerProcess) -> None:
    """Until one of the server's connections waits on a row lock (what `conn` holds)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with psycopg.connect(libpq_conninfo(server.database_url), autocommit=True) as other:
            row = other.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
        if row is not None and row[0]:
            return
        time.sleep(0.05)
    pytest.fail("no write waited on the held row")
