"""`nodeplane server --workers N`: N server processes on one port over one PostgreSQL database."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol.logs import LogChunk, LogLevel, LogLine
from tests.support.calls import act, deploy, wait_until
from tests.support.fleet import FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.log_stream import LogStreamReader
from tests.support.server import (
    ServerProcess,
    admin_token,
    create_pg_database,
    drop_pg_database,
    free_port,
    pg_server,
)

pytestmark = pytest.mark.server


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` holds a listening socket on `port` (from /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
            inodes.add(parts[9])
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with pg_server(tmp_path_factory.mktemp("workers"), ["--workers", "2"]) as server:
        yield server


def test_two_workers_listen_on_the_one_port(workers: ServerProcess) -> None:
    assert workers.process is not None
    supervisor = workers.process.pid
    pids = wait_until(
        lambda: len(found := children(supervisor)) == 2 and found, 30, what="two workers"
    )
    for pid in pids:
        wait_until(lambda pid=pid: listening(pid, workers.port), 30, what=f"{pid} listening")
    # The supervisor itself only supervises.
    assert not listening(supervisor, workers.port)


def test_the_fleet_protocol_works_across_the_workers(workers: ServerProcess) -> None:
    """Executors, users and held polls land on either worker (one connection each); a lifecycle
    action through one process wakes polls held by the other (LISTEN/NOTIFY)."""
    org: Org = make_org(workers.url, Client(workers.url, admin_token(workers.url)))
    executor = FakeExecutor(workers.url, org.executor_key())
    executor.sync()
    node_id = deploy(org.owner, executor, "w-node")["id"]
    known = {node_id: executor.poll()[0].revision}
    # Held polls on fresh connections each: with two workers, the kernel puts them on both.
    with ThreadPoolExecutor(6) as pool:
        held = [pool.submit(executor.poll, known, 20.0) for _ in range(6)]
        time.sleep(1.5)
        act(org.owner, node_id, "STOP")
        woken = [f.result(timeout=30) for f in held]
    assert all(len(w) == 1 and w[0].revision == known[node_id] + 1 for w in woken), woken


def test_a_dead_worker_is_replaced_and_a_stopped_supervisor_takes_its_workers_along(
    tmp_path: Path,
) -> None:
    url = create_pg_database()
    server = ServerProcess(database_url=url, workdir=tmp_path, extra_args=["--workers", "2"])
    try:
        server.start()
        assert server.process is not None
        supervisor = server.process.pid
        first = wait_until(lambda: len(now := children(supervisor)) == 2 and now, 30)
        os.kill(first[0], signal.SIGKILL)
        replaced = wait_until(
            lambda: len(now := children(supervisor)) == 2 and first[0] not in now and now,
            30,
            what="the killed worker replaced",
        )
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        # Killing the supervisor outright (no chance to pass a signal on) still stops them.
        server.kill()
        wait_until(
            lambda: not any(Path(f"/proc/{p}").exists() for p in replaced),
            30,
            what="the workers to exit with their supervisor",
        )
    finally:
        server.stop()
        drop_pg_database(url)


def test_several_workers_on_sqlite_are_refused_with_a_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "nodeplane", "server", "--port", str(free_port())),
            *("--workers", "2", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers above 1 needs PostgreSQL" in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_live_logs_cross_the_workers(workers: ServerProcess) -> None:
    """Viewers' streams, the executor's session poll and its chunk posts land on either worker
    (a connection each): every session is listed, every line reaches its own viewer."""
    org: Org = make_org(workers.url, Client(workers.url, admin_token(workers.url)))
    executor = FakeExecutor(workers.url, org.executor_key())
    executor.sync()
    node_id = deploy(org.owner, executor, "w-logs")["id"]
    viewers = [
        LogStreamReader(workers.url, org.owner.token, node_id, tail=i).start() for i in range(6)
    ]
    try:
        sessions: dict[int, Any] = {}
        deadline = time.monotonic() + 20
        while len(sessions) < 6 and time.monotonic() < deadline:
            listed = executor.log_sessions(
                [s.session_id for s in sessions.values()], wait=5
            )  # a worker that just started first hears every session announced
            sessions = {s.tail: s for s in listed}
        assert sorted(sessions) == list(range(6))
        for tail, session in sessions.items():
            for n in range(3):  # three posts, three fresh connections
                assert executor.post_log_chunk(
                    LogChunk(
                        session_id=session.session_id,
                        lines=[LogLine(level=LogLevel.INFO, text=f"viewer {tail} line {n}")],
                    )
                )
        for tail, viewer in enumerate(viewers):
            got = viewer.lines(timeout=10, until=f"viewer {tail} line 2")
            assert [text for _, text in got] == [f"viewer {tail} line {n}" for n in range(3)]
    finally:
        for viewer in viewers:
            viewer.close()
    wait_until(lambda: executor.log_sessions([], wait=0) == [], 10, what="every session closed")


def test_a_revoked_or_rebound_executor_key_is_refused_by_every_worker_at_once(
    workers: ServerProcess,
) -> None:
    """Each worker keeps what executor keys authenticate as (store/key_cache.py); a revocation
    committed on one must reach the other before the revoking call has answered its caller's
    next request, whichever worker that lands on."""
    org: Org = make_org(workers.url, Client(workers.url, admin_token(workers.url)))
    revoked_key = org.executor_key("to-revoke")
    executor = FakeExecutor(workers.url, revoked_key)
    # A new connection per call: the kernel spreads them over both workers, warming both.
    for _ in range(12):
        executor.sync()
    keys = {k["name"]: k["id"] for k in org.owner("{ apiKeys { id name } }")["apiKeys"]}
    org.owner("mutation($id: UUID!) { revokeApiKey(id: $id) { id } }", {"id": keys["to-revoke"]})
    refusals = []
    for _ in range(12):
        try:
            executor.sync()
            refusals.append("accepted")
        except ControlPlaneError as err:
            refusals.append(err.code)
    assert refusals == ["unauthenticated"] * 12

    # Rebinding an executor to a new key revokes the key it had, on every worker as well.
    first = FakeExecutor(workers.url, org.executor_key("first"))
    for _ in range(12):
        first.sync()
    assert first.id is not None
    replacement = org.executor_key("replacement")
    keys = {k["name"]: k["id"] for k in org.owner("{ apiKeys { id name } }")["apiKeys"]}
    org.owner(
        "mutation($e: UUID!, $k: UUID!) { rebindExecutor(executorId: $e, apiKeyId: $k) { executor { id } } }",
        {"e": first.id, "k": keys["replacement"]},
    )
    outcomes = []
    for _ in range(12):
        try:
            first.sync()
            outcomes.append("accepted")
        except ControlPlaneError as err:
            outcomes.append(err.code)
    assert outcomes == ["unauthenticated"] * 12
    second = FakeExecutor(workers.url, replacement, name=first.name)
    second.sync()
    assert second.id == first.id
