"""The steady heartbeat: a live instance repeating what is stored is answered from one read, and
the times it moves (lastSyncAt, observedAt, lastUsedAt) are written behind the request
(store/seen_times.py): within a flush interval, on a graceful stop, never backwards, never onto
a row that changed hands. Anything else a sync says still takes the write path at once."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from nodeplane.controlplane.store import seen_times
from nodeplane.controlplane.store.database import Database, libpq_conninfo
from nodeplane.controlplane.store.seen_times import PendingTimes, SeenTimes
from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.conftest import BACKENDS, new_database_url
from tests.support.calls import all_events, deploy, executor_view, wait_until
from tests.support.fleet import FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess, drop_pg_database

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
OBSERVED = "query($id: UUID!) { node(id: $id) { observed observedAt observedRevision } }"
SYNCED = "query($id: UUID!) { executor(id: $id) { lastSyncAt } }"


def running(revision: int = 1, height: int = 5) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision,
        processes=[ObservedProcess(role="node", status=ProcessStatus.RUNNING, height=height)],
    )


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _observed(org: Org, node_id: str) -> dict[str, Any]:
    node: dict[str, Any] = org.owner(OBSERVED, {"id": node_id})["node"]
    return node


def _last_sync(org: Org, executor_id: str) -> datetime:
    return when(org.owner(SYNCED, {"id": executor_id})["executor"]["lastSyncAt"])


def test_a_steady_sync_moves_only_times_and_anything_else_is_written_at_once(
    org: Org, server: ServerProcess
) -> None:
    agent = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    agent.sync()
    assert agent.id is not None
    nid = deploy(org.owner, agent, "steady")["id"]
    agent.sync({nid: running()})
    first = _observed(org, nid)
    first_sync = _last_sync(org, agent.id)
    transitions = all_events(org.owner, nodeId=nid, type="node.lifecycle.transition")

    time.sleep(0.05)
    agent.sync({nid: running()})
    moved = wait_until(
        lambda: (n := _observed(org, nid))["observedAt"] > first["observedAt"] and n,
        timeout=5,
        interval=0.1,
        what="observedAt moved by a steady sync",
    )
    assert moved["observed"] == first["observed"]
    wait_until(lambda: _last_sync(org, agent.id) > first_sync, timeout=5, what="lastSyncAt moved")
    assert all_events(org.owner, nodeId=nid, type="node.lifecycle.transition") == transitions

    # A new height is no longer steady: stored by the sync itself, visible when it returns.
    agent.sync({nid: running(height=6)})
    assert _observed(org, nid)["observed"]["processes"][0]["height"] == 6
    # An observation ahead of the spec, or of a node not this executor's, is refused as before.
    ahead = agent.sync({nid: running(revision=2, height=6)})
    assert [r["nodeId"] for r in ahead["rejected"]] == [nid]
    stranger = str(uuid.uuid4())
    refused = agent.sync({nid: running(height=6), stranger: running()})
    assert [r["nodeId"] for r in refused["rejected"]] == [stranger]
    assert executor_view(org.owner, agent.id)["status"] == "ONLINE"


def test_a_steady_sync_under_another_name_is_refused(org: Org, server: ServerProcess) -> None:
    agent = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    agent.sync()
    agent.sync()
    agent.name = f"{agent.name}-renamed"
    with pytest.raises(ControlPlaneError) as err:
        agent.sync()
    assert err.value.code == "forbidden"


@pytest.fixture(params=BACKENDS)
def held_times(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that writes heard-from times only when it stops (nor sweeps): what a steady
    sync leaves in memory is visible as such."""
    backend: str = request.param
    url = new_database_url(backend, tmp_path)
    proc = ServerProcess(
        database_url=url,
        workdir=tmp_path / "server",
        heartbeat_timeout=2.0,
        extra_env={"NODEPLANE_SEEN_FLUSH_INTERVAL": "600", "NODEPLANE_SWEEP_INTERVAL": "600"},
    )
    proc.start()
    yield proc
    proc.stop()
    if backend == "postgresql":
        drop_pg_database(url)


def _org_on(server: ServerProcess) -> Org:
    token = Client(server.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"]["token"]
    return make_org(server.url, Client(server.url, token))


@pytest.mark.server  # starts its own control plane
def test_held_times_are_written_on_a_graceful_stop_and_count_for_the_live_instance(
    held_times: ServerProcess,
) -> None:
    server = held_times
    org = _org_on(server)
    key = org.executor_key()
    live = FakeExecutor(server.url, key, instance_id=uuid.uuid4())
    live.sync()
    assert live.id is not None
    nid = deploy(org.owner, live, "held")["id"]
    live.sync({nid: running()})  # a change: written in the request
    written = _observed(org, nid)["observedAt"]
    claimed_at = _last_sync(org, live.id)

    # Steady syncs past the heartbeat timeout: their times are only in the server's memory...
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        live.sync({nid: running()})
        time.sleep(0.4)
    assert _observed(org, nid)["observedAt"] == written
    assert _last_sync(org, live.id) == claimed_at
    # ...and still they keep the live instance live: another process of the executor is refused.
    other = FakeExecutor(server.url, key, instance_id=uuid.uuid4(), name=live.name)
    with pytest.raises(ControlPlaneError) as err:
        other.sync()
    assert err.value.code == "executor_instance_conflict"

    last_steady = datetime.now(UTC)
    server.stop()
    server.start()
    node = _observed(org, nid)
    assert when(node["observedAt"]) > when(written)
    assert when(node["observedAt"]) <= last_steady
    assert claimed_at < _last_sync(org, live.id) <= last_steady


def test_written_times_only_move_forward_and_only_onto_the_same_holder(
    org: Org, server: ServerProcess
) -> None:
    agent = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    agent.sync()
    assert agent.id is not None and agent.instance_id is not None
    nid = deploy(org.owner, agent, "forward")["id"]
    agent.sync({nid: running()})
    time.sleep(1.5)  # anything the server held is written
    synced, observed = _last_sync(org, agent.id), when(_observed(org, nid)["observedAt"])
    eid, instance, node = uuid.UUID(agent.id), agent.instance_id, uuid.UUID(nid)
    later = datetime.now(UTC) + timedelta(hours=1)

    async def write(*entries: tuple[uuid.UUID, uuid.UUID, uuid.UUID, datetime]) -> None:
        db = Database(server.database_url)
        try:
            for executor_id, instance_id, node_id, at in entries:
                db.seen.executor_synced(executor_id, instance_id, [node_id], at)
                await db.flush_seen()
        finally:
            await db.close()

    asyncio.run(
        write(
            (eid, instance, node, synced - timedelta(minutes=5)),  # older: moves nothing back
            (eid, uuid.uuid4(), uuid.uuid4(), later),  # another instance, another node
        )
    )
    assert _last_sync(org, agent.id) == synced
    assert when(_observed(org, nid)["observedAt"]) == observed
    # A node of another executor is not touched by this executor's time.
    other = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    other.sync()
    foreign = deploy(org.owner, other, "foreign")["id"]
    other.sync({foreign: running()})
    time.sleep(1.5)
    foreign_seen = _observed(org, foreign)["observedAt"]
    asyncio.run(write((eid, instance, uuid.UUID(foreign), later)))
    assert _observed(org, foreign)["observedAt"] == foreign_seen
    asyncio.run(write((eid, instance, node, later)))
    assert _last_sync(org, agent.id) == later
    assert when(_observed(org, nid)["observedAt"]) == later


def test_a_flush_passes_over_a_row_a_request_holds_and_waits_for_nothing(
    org: Org, server: ServerProcess
) -> None:
    """On PostgreSQL a row locked by a transaction in flight (a sync storing a change, a
    rebind) is passed over: waiting for it held every row the flush had already written, and
    the requests that wanted those queued behind it (seconds under a starting fleet)."""
    if not server.database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer and no row locks")
    held, free = (
        FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4()) for _ in range(2)
    )
    for agent in (held, free):
        agent.sync()
    assert held.id is not None and free.id is not None
    assert held.instance_id is not None and free.instance_id is not None
    before = {a.id: _last_sync(org, a.id) for a in (held, free)}
    later = datetime.now(UTC) + timedelta(hours=1)

    async def flush_while_locked() -> None:
        db = Database(server.database_url)
        try:
            async with db.write() as uow:
                # Another transaction holds the executor's row, as a sync writing it does.
                await uow.session.execute(
                    text("SELECT 1 FROM executors WHERE id = :id FOR UPDATE"), {"id": held.id}
                )
                flusher = Database(server.database_url)
                try:
                    for agent in (held, free):
                        assert agent.id is not None and agent.instance_id is not None
                        flusher.seen.executor_synced(
                            uuid.UUID(agent.id), agent.instance_id, [], later
                        )
                    async with asyncio.timeout(30):  # it would wait as long as the lock is held
                        await flusher.flush_seen()
                finally:
                    await flusher.close()
        finally:
            await db.close()

    asyncio.run(flush_while_locked())
    assert _last_sync(org, free.id) == later
    assert _last_sync(org, held.id) == before[held.id]


def test_a_flush_commits_a_part_at_a_time_so_no_row_waits_for_the_rest(
    org: Org, server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the flush writes stays locked until its transaction commits. In one transaction
    a flush held every node it wrote (at 400 syncs/s a fifth of the fleet, for 160-560 ms),
    and a lifecycle action on one of them waited for all of it. Each part now commits before
    the next is written: a row of a part already written can be locked at once."""
    if not server.database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer and no row locks")
    monkeypatch.setattr(seen_times, "PART", 1)
    agent = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    agent.sync()
    assert agent.id is not None and agent.instance_id is not None
    executor_id, instance = uuid.UUID(agent.id), agent.instance_id
    node_ids = [uuid.UUID(deploy(org.owner, agent, f"n{i}")["id"]) for i in range(3)]
    later = datetime.now(UTC) + timedelta(hours=1)
    # Right after each UPDATE of nodes' times: the nodes another connection can lock at once.
    lockable: list[list[bool]] = []

    def free_rows() -> list[bool]:
        free = []
        with psycopg.connect(libpq_conninfo(server.database_url), autocommit=True) as other:
            for node_id in node_ids:
                try:
                    other.execute("SELECT 1 FROM nodes WHERE id = %s FOR UPDATE NOWAIT", (node_id,))
                    free.append(True)
                except psycopg.errors.LockNotAvailable:
                    free.append(False)
        return free

    def after_update(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("UPDATE nodes SET observed_at"):
            lockable.append(free_rows())

    async def flush() -> None:
        flusher = Database(server.database_url)
        event.listen(flusher.engine.sync_engine, "after_cursor_execute", after_update)
        try:
            flusher.seen.executor_synced(executor_id, instance, node_ids, later)
            assert await flusher.flush_seen() == 4
        finally:
            await flusher.close()

    asyncio.run(flush())
    # One node per part: only the node being written is held; the parts before it committed.
    assert lockable == [[False, True, True], [True, False, True], [True, True, False]]
    assert [when(_observed(org, str(n))["observedAt"]) for n in node_ids] == [later] * 3


def test_pending_times_keep_the_latest_per_row() -> None:
    seen = SeenTimes()
    e, i, n, k = (uuid.uuid4() for _ in range(4))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    seen.executor_synced(e, i, [n], t0 + timedelta(seconds=2))
    seen.key_used(k, t0 + timedelta(seconds=2))
    failed = PendingTimes(
        executors={e: (i, t0)}, nodes={n: (e, t0 + timedelta(seconds=5))}, keys={k: t0}
    )
    seen.put_back(failed)  # a failed flush's entries never replace newer ones
    taken = seen.take()
    assert taken.executors == {e: (i, t0 + timedelta(seconds=2))}
    assert taken.nodes == {n: (e, t0 + timedelta(seconds=5))}
    assert taken.keys == {k: t0 + timedelta(seconds=2)}
    assert len(seen) == 0 and len(taken) == 3
    assert seen.executor_seen(e) is None


def test_pending_times_come_in_parts_of_one_kind_each() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    e, i = uuid.uuid4(), uuid.uuid4()
    pending = PendingTimes(
        executors={uuid.uuid4(): (i, t0) for _ in range(3)},
        nodes={uuid.uuid4(): (e, t0) for _ in range(5)},
        keys={uuid.uuid4(): t0},
    )
    parts = list(pending.parts(2))
    shape = [(len(p.executors), len(p.nodes), len(p.keys)) for p in parts]
    assert shape == [(2, 0, 0), (1, 0, 0), (0, 2, 0), (0, 2, 0), (0, 1, 0), (0, 0, 1)]
    whole = PendingTimes()
    for part in parts:
        whole.merge(part)
    assert (whole.executors, whole.nodes, whole.keys) == (
        pending.executors,
        pending.nodes,
        pending.keys,
    )
