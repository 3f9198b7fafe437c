"""Two control-plane replicas on one PostgreSQL database: wake-ups and sweeps cross replicas."""

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import act, all_events, deploy, executor_view, wait_until
from tests.support.fleet import CAPABILITIES, FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PG_ADMIN_URL,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
)

# Control-plane processes and PostgreSQL, started here rather than through fixtures.
pytestmark = pytest.mark.server

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
METRICS_TOKEN = "metrics-token-replicas-0123456789"


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Servers A and B on one fresh PostgreSQL database, both sweeping."""
    url = create_pg_database()
    workdir = tmp_path_factory.mktemp("replicas")
    metrics = {"NODEPLANE_METRICS_TOKEN": METRICS_TOKEN}
    a = ServerProcess(database_url=url, workdir=workdir / "a", extra_env=metrics)
    b = ServerProcess(database_url=url, workdir=workdir / "b", extra_env=metrics)
    try:
        # Started together, as a deployment with two replicas would be: they race to migrate the
        # empty database and to create the first admin, and both must come up.
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(a.start), pool.submit(b.start)]:
                started.result()
        yield a, b
    finally:
        b.stop()
        a.stop()
        drop_pg_database(url)


def listeners(database_url: str) -> list[int]:
    """Backend pids of the connections LISTENing for spec changes on the database."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN%%'",
            (name,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def replica_org(replicas: tuple[ServerProcess, ServerProcess]) -> Org:
    """An organization made through replica A."""
    a, _ = replicas
    token = Client(a.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"]["token"]
    return make_org(a.url, Client(a.url, token))


def test_poll_held_on_b_wakes_on_a_commit_through_a(
    replicas: tuple[ServerProcess, ServerProcess], replica_org: Org
) -> None:
    a, b = replicas
    key = replica_org.executor_key()
    on_a = FakeExecutor(a.url, key)
    on_a.sync()
    on_b = FakeExecutor(b.url, key, name=on_a.name, id=on_a.id)
    nid = deploy(replica_org.owner, on_a, "ltc-repl")["id"]
    # B sees what A committed: the poll through B returns revision 1 at once.
    assert [s.revision for s in on_b.poll({}, wait=20)] == [1]

    revision = 1
    with ThreadPoolExecutor(1) as pool:
        for action in ("STOP", "START", "RESTART"):
            started = time.monotonic()
            held = pool.submit(on_b.poll, {nid: revision}, 20)
            time.sleep(1.0)
            assert not held.done(), "B answered a poll with nothing newer at once"
            revision = act(replica_org.owner, nid, action)["revision"]  # via A
            committed = time.monotonic()
            specs = held.result(timeout=25)
            woke = time.monotonic() - committed
            assert woke < 2, f"{action}: B's poll woke {woke:.2f}s after A's commit"
            assert time.monotonic() - started < 5
            assert [(str(s.node_id), s.revision) for s in specs] == [(nid, revision)]
    assert revision == 4

    # And the other way: a commit through B wakes a poll held on A.
    owner_on_b = Client(b.url, replica_org.owner.token)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(on_a.poll, {nid: 4}, 20)
        time.sleep(1.0)
        assert not held.done()
        act(owner_on_b, nid, "RESTART")
        committed = time.monotonic()
        specs = held.result(timeout=25)
        assert time.monotonic() - committed < 2
    assert [s.revision for s in specs] == [5]


@pytest.mark.parametrize("kept_from", ["read", "written"])
def test_a_heartbeat_kept_on_a_is_written_again_once_b_stored_a_change(
    replicas: tuple[ServerProcess, ServerProcess], replica_org: Org, kept_from: str
) -> None:
    """A keeps an executor's steady heartbeat (services/executors.py `kept_sync`), from the
    read of a steady repeat or from the written sync itself. The executor's connection moves
    to B and syncs new capabilities, which B stores; back on A, its old heartbeat is a change
    again and must be stored, not answered from A's look."""
    a, b = replicas
    owner = replica_org.owner
    key = replica_org.executor_key()
    instance = uuid.uuid4()
    on_a = FakeExecutor(a.url, key, instance_id=instance)
    on_a.sync()  # registers the executor and its live instance
    if kept_from == "read":
        for _ in range(4):  # read as steady, then answered from what A kept
            on_a.sync()
    else:
        # Written by the live instance: kept as stored, its own notice no change when it is back.
        on_a.capabilities = CAPABILITIES.model_copy(update={"storage_classes": ["slow-hdd"]})
        on_a.sync()
        on_a.sync()
    assert on_a.id is not None
    wider = CAPABILITIES.model_copy(update={"storage_classes": ["fast-ssd"]})
    on_b = FakeExecutor(
        b.url, key, name=on_a.name, id=on_a.id, instance_id=instance, capabilities=wider
    )
    on_b.sync()

    def storage_classes() -> list[str]:
        executor = owner(
            "query($id: UUID!) { executor(id: $id) { capabilities } }", {"id": on_a.id}
        )
        classes: list[str] = executor["executor"]["capabilities"]["storageClasses"]
        return classes

    assert storage_classes() == ["fast-ssd"]
    _notices_reached(a, b, replica_org)
    on_a.sync()
    assert storage_classes() == on_a.capabilities.storage_classes


def test_a_write_of_many_nodes_through_b_leaves_a_keeping_other_heartbeats(
    replicas: tuple[ServerProcess, ServerProcess], replica_org: Org
) -> None:
    """B stores the first observations of 250 nodes in one transaction: more than one NOTIFY
    payload can name (about 190). A, hearing it, still answers another executor's repeated
    heartbeat from what it kept (store/sync_looks.py): the notices name the nodes. They said
    "every node of the organization", and A forgot every executor's look, which made a second
    worker under a fleet's start read every sync and poll and never catch up."""
    a, b = replicas
    owner = replica_org.owner
    busy = FakeExecutor(b.url, replica_org.executor_key())
    busy.sync()
    node_ids = [deploy(owner, busy, f"many-{i}")["id"] for i in range(250)]
    quiet = FakeExecutor(a.url, replica_org.executor_key(), instance_id=uuid.uuid4())
    for _ in range(3):  # registered, read as steady, then answered from what A kept
        quiet.sync()
    kept = _kept_syncs(a)
    quiet.sync()
    assert _kept_syncs(a) == kept + 1

    running = [ObservedProcess(role="node", status=ProcessStatus.RUNNING)]
    busy.sync({nid: ObservedNodeState(revision=1, processes=running) for nid in node_ids})
    for nid in (node_ids[0], node_ids[-1]):
        shown = owner("query($id: UUID!) { node(id: $id) { phase } }", {"id": nid})
        assert shown["node"]["phase"] == "RUNNING"
    _notices_reached(a, b, replica_org)
    quiet.sync()
    assert _kept_syncs(a) == kept + 2


def _kept_syncs(server: ServerProcess) -> float:
    """Heartbeats `server` answered from a look it kept (`nodeplane_syncs_total{outcome="kept"}`)."""
    text = httpx.get(
        f"{server.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "nodeplane_syncs_total" and sample.labels["outcome"] == "kept"
    )


def _notices_reached(a: ServerProcess, b: ServerProcess, org: Org) -> None:
    """Return once A has had every notice of what B committed so far: PostgreSQL delivers a
    listener the notices of different transactions in the order they committed, so a poll held
    on A that a commit through B wakes has had the earlier ones."""
    watcher = FakeExecutor(a.url, org.executor_key())
    watcher.sync()
    nid = deploy(org.owner, watcher, "barrier")["id"]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(watcher.poll, {nid: 1}, 20)
        time.sleep(1.0)
        assert not held.done()
        act(Client(b.url, org.owner.token), nid, "STOP")
        assert [s.revision for s in held.result(timeout=25)] == [2]


def test_two_sweeping_replicas_record_one_disconnect_per_silence(
    replicas: tuple[ServerProcess, ServerProcess], replica_org: Org
) -> None:
    a, b = replicas
    fleet = []
    for i in range(6):
        ex = FakeExecutor((a, b)[i % 2].url, replica_org.executor_key(f"ex-{i}"))
        ex.sync()
        fleet.append(ex)
    owner = replica_org.owner

    def disconnects() -> Counter[str]:
        events = all_events(owner, type="executor.disconnected")
        return Counter(e["executorId"] for e in events)

    def all_offline() -> bool:
        return all(executor_view(owner, str(ex.id))["status"] == "OFFLINE" for ex in fleet)

    # Silence: every executor goes offline and each gets exactly one disconnect event, even
    # though both replicas sweep every 0.5 s.
    wait_until(all_offline, timeout=10, what="every executor offline")
    wait_until(lambda: len(disconnects()) == len(fleet), timeout=10, what="disconnect events")
    time.sleep(2.0)  # several more sweeps on each replica
    assert disconnects() == Counter({str(ex.id): 1 for ex in fleet})

    # Back and silent again: one reconnect each, then a second disconnect each.
    for ex in fleet:
        ex.sync()
    reconnects = Counter(e["executorId"] for e in all_events(owner, type="executor.reconnected"))
    assert reconnects == Counter({str(ex.id): 1 for ex in fleet})
    wait_until(
        lambda: set(disconnects().values()) == {2}, timeout=15, what="second disconnect events"
    )
    time.sleep(2.0)
    assert disconnects() == Counter({str(ex.id): 2 for ex in fleet})
    connected = all_events(owner, type="executor.connected")
    assert Counter(e["executorId"] for e in connected) == Counter({str(ex.id): 1 for ex in fleet})


def test_replicas_started_together_share_one_first_admin(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    orgs = []
    for server in replicas:
        token = Client(server.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"]["token"]
        admin = Client(server.url, token)
        orgs.append(admin("{ me { isSystemAdmin organization { id name } } }")["me"])
        created = all_events(admin, type="organization.created")
        assert [e["message"] for e in created] == [f"first admin {ADMIN_EMAIL} created"]
    assert orgs[0] == orgs[1] and orgs[0]["isSystemAdmin"] is True


def test_poll_still_wakes_after_the_listen_connections_drop(
    replicas: tuple[ServerProcess, ServerProcess], replica_org: Org
) -> None:
    a, b = replicas
    key = replica_org.executor_key()
    on_a = FakeExecutor(a.url, key)
    on_a.sync()
    on_b = FakeExecutor(b.url, key, name=on_a.name, id=on_a.id)
    nid = deploy(replica_org.owner, on_a, "ltc-relisten")["id"]
    pids = listeners(a.database_url)
    assert len(pids) == 2, "each replica should hold one LISTEN connection"

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(on_b.poll, {nid: 1}, 20)
        time.sleep(1.0)
        assert not held.done()
        # PostgreSQL drops both LISTEN connections (a failover, an idle-connection reaper...);
        # a commit right away, while nobody listens, must still reach the poll held on B.
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        act(replica_org.owner, nid, "STOP")
        committed = time.monotonic()
        specs = held.result(timeout=25)
        assert time.monotonic() - committed < 4
    assert [s.revision for s in specs] == [2]

    # Both replicas listen again, and wake-ups flow as before.
    wait_until(
        lambda: len(set(listeners(a.database_url)) - set(pids)) == 2,
        timeout=10,
        what="replicas to LISTEN again",
    )
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(on_b.poll, {nid: 2}, 20)
        time.sleep(1.0)
        act(replica_org.owner, nid, "START")
        committed = time.monotonic()
        assert [s.revision for s in held.result(timeout=25)] == [3]
        assert time.monotonic() - committed < 2
