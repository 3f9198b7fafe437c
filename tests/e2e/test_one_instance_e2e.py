"""One agent per host and executor, and quiet outages: real control-plane processes, real agents
on the process driver and real litecoind regtest nodes.

- A second agent on the same data directory stops at once, naming the directory and the pid
  holding it; the first one and its node are untouched.
- A second agent with the same key and name on another data directory (a cloned host) is refused
  by the control plane: it starts nothing, even from specs it holds on disk, and the node's pid in
  the API stays the first agent's. Once the first agent stops, it takes over after the heartbeat
  timeout.
- An outage of the control plane itself writes no disconnected/reconnected pair for healthy
  executors; an executor that really goes silent is marked disconnected at the timeout.
"""

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import _cleanup_units, _online, wait_for
from tests.e2e.litecoin_nodes import (
    LogWatcher,
    all_records,
    create_node,
    executor_id,
    feed,
    lock_failures,
    node,
    node_pids,
    single_pid,
    wait_phase,
)
from tests.e2e.test_resilience_e2e import Plane, own_plane, running_agent
from tests.support.agent import AgentProcess

HEARTBEAT_TIMEOUT = 3.0
SWEEP_INTERVAL = 0.5  # ServerProcess's NODEPLANE_SWEEP_INTERVAL
# How long a refused clone is watched: several of its 1 s heartbeats and 2 s reports.
WATCH_SECONDS = 6.0


@pytest.fixture
def short_plane(tmp_path: Path) -> Iterator[Plane]:
    """A control plane on SQLite with a 3 s heartbeat timeout, that this test stops and starts."""
    with own_plane(tmp_path / "plane", heartbeat_timeout=HEARTBEAT_TIMEOUT) as plane:
        yield plane


@contextlib.contextmanager
def second_agent(first: AgentProcess, workdir: Path, data_dir: Path) -> Iterator[AgentProcess]:
    """Another agent process with `first`'s key and name on `data_dir`; its own config and log."""
    second = AgentProcess(
        workdir=workdir,
        server_url=first.server_url,
        api_key=first.api_key,
        driver="process",
        name=first.name,
    )
    second.write_config()
    text = second.config_path.read_text().replace(str(second.data_dir), str(data_dir))
    second.config_path.write_text(text)
    try:
        yield second
    finally:
        second.stop()
        if data_dir != first.data_dir:
            _cleanup_units(second)


def _records(agent: AgentProcess, event: str) -> list[dict[str, Any]]:
    return [r for r in all_records(agent) if r.get("event") == event]


# ---- the same data directory: the lock ------------------------------------------------------


def test_a_second_agent_on_the_same_data_dir_stops_and_names_the_holder(
    short_plane: Plane, tmp_path: Path
) -> None:
    with running_agent(short_plane, "process", tmp_path / "first", None) as first:
        node_id = create_node(short_plane.org, first, "solo")
        wait_phase(short_plane.org, node_id, "RUNNING")
        pid = single_pid(first, "solo")
        assert first.popen is not None
        holder = first.popen.pid

        with second_agent(first, tmp_path / "second", first.data_dir) as second:
            second.start()
            assert second.popen is not None
            try:
                code = second.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            assert code not in (None, 0), "the second agent kept running on a held data dir"
            said = second.log_path.read_text()
            assert str(first.data_dir) in said and f"pid {holder}" in said, said
            second.popen = None

        # The first agent and its node never noticed.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert first.popen.poll() is None, "the first agent died"
            assert node_pids(first, "solo") == [pid]
            time.sleep(0.25)
        assert node(short_plane.org, node_id)["phase"] == "RUNNING"
        assert lock_failures(first, "solo") == 0


# ---- a cloned host: another data directory, same key and name --------------------------------


def test_a_cloned_host_is_refused_and_takes_over_only_when_the_first_is_gone(
    short_plane: Plane, tmp_path: Path
) -> None:
    org = short_plane.org
    with running_agent(short_plane, "process", tmp_path / "first", None) as first:
        node_id = create_node(org, first, "shared")
        wait_phase(org, node_id, "RUNNING")
        pid = single_pid(first, "shared")
        ex_id = executor_id(org, first)

        def observed_pid() -> int:
            value: int = node(org, node_id)["observed"]["processes"][0]["pid"]
            return value

        wait_for(lambda: observed_pid() == pid, timeout=30, what="the node's pid reported")

        clone_data = tmp_path / "clone" / "data"
        # A cloned disk: the clone holds the same specs (the lock file's boot id would differ on
        # another host, so it is not copied here, where the boot is the same).
        (clone_data / "state").mkdir(parents=True)
        shutil.copy(first.data_dir / "state" / "specs.json", clone_data / "state" / "specs.json")
        with second_agent(first, tmp_path / "clone", clone_data) as clone:
            watcher = LogWatcher(clone)
            clone.start()
            refusal = watcher.wait(lambda r: r.get("event") == "executor.instance_refused")
            assert "last synced at" in refusal["error"], refusal

            deadline = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < deadline:
                assert node_pids(clone, "shared") == [], "the refused clone started the node"
                assert node_pids(first, "shared") == [pid]
                n = node(org, node_id)
                assert (n["phase"], observed_pid()) == ("RUNNING", pid), "the API flipped"
                time.sleep(0.25)
            assert clone.popen is not None and clone.popen.poll() is None
            assert not (clone_data / "nodes" / "shared").exists()
            # Refused every second, said once: in the log and in the feed.
            assert len(_records(clone, "executor.instance_refused")) == 1
            assert _records(clone, "sync.failed") == []
            refused = feed(org, executorId=ex_id, type="executor.instance_refused")
            assert len(refused) == 1 and refused[0]["level"] == "WARN"
            assert refused[0]["payload"]["instanceId"] != refused[0]["payload"]["refusedInstanceId"]

            # The first agent goes away (its litecoind with it): the clone takes over.
            first.stop()
            stopped_at = time.monotonic()
            _cleanup_units(first)
            accepted = watcher.wait(
                lambda r: r.get("event") == "executor.instance_accepted",
                timeout=HEARTBEAT_TIMEOUT + 10,
            )
            assert time.monotonic() - stopped_at >= HEARTBEAT_TIMEOUT - 1.5, accepted
            wait_for(
                lambda: len(node_pids(clone, "shared")) == 1,
                timeout=60,
                what="the clone runs the node",
            )
            new_pid = single_pid(clone, "shared")
            wait_for(
                lambda: node(org, node_id)["phase"] == "RUNNING" and observed_pid() == new_pid,
                timeout=30,
                what="the clone's node reported",
            )
            replaced = feed(org, executorId=ex_id, type="executor.instance_replaced")
            assert len(replaced) == 1
            assert (
                replaced[0]["payload"]["previousInstanceId"] == refused[0]["payload"]["instanceId"]
            )
            assert (
                replaced[0]["payload"]["instanceId"] == refused[0]["payload"]["refusedInstanceId"]
            )


# ---- quiet outages ----------------------------------------------------------------------------


def _connectivity(org: Any, ex_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in feed(org, executorId=ex_id)
        if e["type"] in ("executor.disconnected", "executor.reconnected")
    ]


def test_an_outage_of_the_control_plane_marks_no_healthy_executor_disconnected(
    short_plane: Plane, tmp_path: Path
) -> None:
    """The control plane is away for three heartbeat timeouts. The agent that kept running
    gets no disconnected/reconnected pair; the one killed during the outage is marked
    disconnected one timeout after the control plane is back, while it is still gone."""
    org = short_plane.org
    with (
        running_agent(short_plane, "process", tmp_path / "healthy", None) as healthy,
        running_agent(short_plane, "process", tmp_path / "dies", None) as dies,
    ):
        healthy_id, dies_id = executor_id(org, healthy), executor_id(org, dies)
        short_plane.server.stop()
        dies.kill()
        time.sleep(3 * HEARTBEAT_TIMEOUT)
        back = datetime.now(UTC)
        short_plane.server.start()
        wait_for(lambda: _online(org, healthy.name), timeout=15, what="healthy agent online")

        marked = wait_for(
            lambda: _connectivity(org, dies_id),
            timeout=HEARTBEAT_TIMEOUT + 10,
            interval=0.2,
            what="the dead agent marked disconnected",
        )
        assert [e["type"] for e in marked] == ["executor.disconnected"]
        after = (datetime.fromisoformat(marked[0]["createdAt"]) - back).total_seconds()
        # The grace runs from the server's own start, a moment after `back`.
        assert HEARTBEAT_TIMEOUT - 0.5 <= after <= HEARTBEAT_TIMEOUT + 6, after

        time.sleep(HEARTBEAT_TIMEOUT)  # the healthy one has been past the grace for a while
        assert _connectivity(org, healthy_id) == []
        assert _online(org, healthy.name)


def test_an_executor_silent_while_the_control_plane_is_up_is_marked_at_the_timeout(
    short_plane: Plane, tmp_path: Path
) -> None:
    org = short_plane.org
    with running_agent(short_plane, "process", tmp_path / "agent", None) as agent:
        ex_id = executor_id(org, agent)
        time.sleep(HEARTBEAT_TIMEOUT)  # past the control plane's start-up grace
        agent.kill()
        killed = datetime.now(UTC)
        marked = wait_for(
            lambda: _connectivity(org, ex_id),
            timeout=HEARTBEAT_TIMEOUT + 5,
            interval=0.2,
            what="executor.disconnected",
        )
        assert [e["type"] for e in marked] == ["executor.disconnected"]
        after = (datetime.fromisoformat(marked[0]["createdAt"]) - killed).total_seconds()
        # The last heartbeat was at most 1 s before the kill; the sweep runs every 0.5 s.
        assert HEARTBEAT_TIMEOUT - 1.5 <= after <= HEARTBEAT_TIMEOUT + 1 + 2 * SWEEP_INTERVAL

        agent.start()
        wait_for(lambda: _online(org, agent.name), timeout=30, what="back online")
        types = [e["type"] for e in _connectivity(org, ex_id)]
        assert types == ["executor.disconnected", "executor.reconnected"]
