"""Resilience: a SIGKILLed agent, a control plane gone for a minute, a restart under a long-poll.

Every scenario runs a real control-plane process, real agents and real litecoind regtest nodes.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import _cleanup_units, _online, wait_for
from tests.e2e.litecoin_nodes import (
    LogWatcher,
    block_count,
    create_node,
    executor_id,
    feed,
    lifecycle,
    lock_failures,
    node,
    node_pids,
    single_pid,
    start_count,
    unit_active_state,
    unit_definition,
    wait_phase,
)
from tests.support.agent import AgentProcess, DriverKind
from tests.support.fleet import Org, make_org
from tests.support.gql import Client
from tests.support.sandbox import SystemdSandbox
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess

OUTAGE_SECONDS = 60
# After a change, how long a converged node must stay as it is (several reconcile ticks of 1 s).
STABLE_SECONDS = 3


# ---- 1a: the agent SIGKILLed while it applies a revision ----------------------------------


@dataclass(frozen=True)
class KillPoint:
    """When to SIGKILL the agent: on the first log record matching `event`, plus `delay`."""

    event: str
    delay: float = 0.0
    # For `node.action`: which of the applier's actions (file writes and installs come first).
    actions: tuple[str, ...] = ()


UNIT_ACTIONS = ("start", "stop", "restart")
KILL_POINTS = [
    KillPoint("spec.received"),  # the revision is on disk, nothing applied yet
    KillPoint("node.action", actions=UNIT_ACTIONS),  # systemctl restart / the supervisor's stop
    KillPoint("node.action", delay=0.1, actions=UNIT_ACTIONS),  # litecoind stopping or starting
]


def _kill_when(
    agent: AgentProcess, watcher: LogWatcher, point: KillPoint, node_name: str, revision: int
) -> dict[str, Any]:
    """Wait for the record (for `node_name`, at `revision` when it carries one), then SIGKILL."""

    def matches(record: dict[str, Any]) -> bool:
        return (
            record.get("event") == point.event
            and record.get("node") == node_name
            and record.get("revision", revision) == revision
            and (not point.actions or record.get("action") in point.actions)
        )

    record = watcher.wait(matches, timeout=30)
    if point.delay:
        time.sleep(point.delay)
    agent.kill()
    return record


def _hold_steady(checks: Callable[[], None], seconds: float = STABLE_SECONDS) -> None:
    """Run `checks` repeatedly for `seconds`: the converged state must not drift."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        checks()
        time.sleep(0.25)


def test_sigkilled_agent_converges_without_duplicates(e2e_org: Org, agent: AgentProcess) -> None:
    """Kill the agent at several moments of a RESTART and of a STOP; each time it comes back,
    converges, runs exactly one litecoind per running node, never starts the stopped node and
    never stops the untouched running one."""
    mover = create_node(e2e_org, agent, "mover")
    parked = create_node(e2e_org, agent, "parked", desiredState="stopped")
    steady = create_node(e2e_org, agent, "steady")
    wait_phase(e2e_org, mover, "RUNNING")
    wait_phase(e2e_org, steady, "RUNNING")
    wait_phase(e2e_org, parked, "STOPPED", revision=1)
    assert agent.unit_exists("parked") and node_pids(agent, "parked") == []
    steady_pid = single_pid(agent, "steady")
    steady_starts = start_count(agent, "steady")
    assert start_count(agent, "parked") == 0 and steady_starts == 1
    before_kills = {n: _runtime_events(e2e_org, n) for n in (mover, parked, steady)}

    def untouched() -> None:
        # Sampled all along, not only at the end: a start of `parked` or a stop of `steady`
        # would show here (or in the start counts checked after each round).
        assert node_pids(agent, "parked") == [], "the stopped node was started"
        assert node_pids(agent, "steady") == [steady_pid], "the untouched node was disturbed"

    def settled(mover_pids: list[int]) -> Callable[[], None]:
        def check() -> None:
            untouched()
            _assert_pids(agent, "mover", mover_pids)

        return check

    for point in KILL_POINTS:
        before_pid = single_pid(agent, "mover")
        before_starts = start_count(agent, "mover")
        watcher = LogWatcher(agent)
        revision = lifecycle(e2e_org, mover, "RESTART")
        _kill_when(agent, watcher, point, "mover", revision)
        untouched()
        agent.start()

        def restarted(before: int = before_pid, rev: int = revision) -> bool:
            untouched()
            n = node(e2e_org, mover)
            pids = node_pids(agent, "mover")
            return (
                n["phase"] == "RUNNING"
                and n["observedRevision"] == rev
                and len(pids) == 1
                and pids[0] != before
                and agent.main_pid("mover") == pids[0]
            )

        wait_for(restarted, timeout=90, what=f"mover restarted after a kill at {point}")
        new_pid = single_pid(agent, "mover")
        _hold_steady(settled([new_pid]))
        # A restart is one stop and at least one start (a second one if the kill landed after
        # systemd restarted it but before the agent recorded that); never two at once.
        assert start_count(agent, "mover") >= before_starts + 1, point
        assert lock_failures(agent, "mover") == 0, f"a duplicate litecoind tried to start ({point})"

    # A STOP interrupted by the kill: the node ends stopped and stays stopped.
    watcher = LogWatcher(agent)
    revision = lifecycle(e2e_org, mover, "STOP")
    _kill_when(agent, watcher, KillPoint("node.action", actions=UNIT_ACTIONS), "mover", revision)
    agent.start()
    wait_phase(e2e_org, mover, "STOPPED", revision=revision)
    stopped_starts = start_count(agent, "mover")
    _hold_steady(settled([]))
    assert unit_active_state(agent, "mover") in ("inactive", "failed")
    assert start_count(agent, "mover") == stopped_starts, "the stopped node was started again"

    # Through four kills: the stopped node never ran, the untouched one never restarted.
    assert start_count(agent, "parked") == 0
    assert start_count(agent, "steady") == steady_starts
    assert single_pid(agent, "steady") == steady_pid
    assert lock_failures(agent, "steady") == lock_failures(agent, "parked") == 0
    assert node(e2e_org, parked)["phase"] == "STOPPED"
    assert node(e2e_org, steady)["phase"] == "RUNNING"
    # Stops and restarts the agent was killed in are no crashes: nothing of the kind in the feed.
    time.sleep(3)  # a report or two, in case one is on its way
    for node_id, earlier in before_kills.items():
        assert _runtime_events(e2e_org, node_id) == earlier


def _runtime_events(org: Org, node_id: str) -> list[tuple[str, str, Any, str]]:
    """Crashes and automatic restarts the agent reported for the node."""
    return [
        (e["type"], e["message"], e["payload"], e["createdAt"])
        for e in feed(org, nodeId=node_id)
        if e["type"].startswith("node.process.")
    ]


def _assert_pids(agent: AgentProcess, name: str, expected: list[int]) -> None:
    assert node_pids(agent, name) == expected, f"{name}: {node_pids(agent, name)} != {expected}"


# ---- a control plane of our own -------------------------------------------------------------


@dataclass
class Plane:
    """A dedicated control plane (stopped and started by the test) and an organization on it."""

    server: ServerProcess
    org: Org

    def restart_hard(self) -> None:
        """SIGKILL the server and start it again on the same port and database."""
        assert self.server.process is not None
        self.server.process.kill()
        self.server.process.wait()
        self.server.process = None
        self.server.start()


@contextlib.contextmanager
def own_plane(workdir: Path, heartbeat_timeout: float) -> Iterator[Plane]:
    """A control plane on SQLite in `workdir`, with an organization, that one test alone stops
    and starts."""
    server = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}",
        workdir=workdir,
        heartbeat_timeout=heartbeat_timeout,
    )
    server.start()
    try:
        token = Client(server.url)(
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
        )["login"]["token"]
        yield Plane(server, make_org(server.url, Client(server.url, token)))
    finally:
        server.stop()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    """A control plane on SQLite, heartbeat timeout 4 s, that this test alone stops and starts."""
    with own_plane(tmp_path / "plane", heartbeat_timeout=4) as plane:
        yield plane


@contextlib.contextmanager
def running_agent(
    plane: Plane, driver: DriverKind, workdir: Path, sandbox: SystemdSandbox | None
) -> Iterator[AgentProcess]:
    """An agent of the plane's organization, online; stopped and cleaned up afterwards."""
    proc = AgentProcess(
        workdir=workdir,
        server_url=plane.server.url,
        api_key=plane.org.executor_key(),
        driver=driver,
        sandbox=sandbox,
    )
    proc.start()
    try:
        wait_for(lambda: _online(plane.org, proc.name), timeout=60, what="agent online")
        yield proc
    finally:
        proc.stop()
        _cleanup_units(proc)


def _drivers(request: pytest.FixtureRequest) -> list[tuple[DriverKind, SystemdSandbox | None]]:
    """Both drivers when a sandboxed systemd can be booted here, else the process driver."""
    drivers: list[tuple[DriverKind, SystemdSandbox | None]] = [("process", None)]
    if SystemdSandbox.unavailable_reason() is None:
        drivers.append(("systemd", request.getfixturevalue("systemd_sandbox")))
    return drivers


# ---- 1b: the control plane gone for a minute --------------------------------------------------


@dataclass
class Host:
    """One agent with a running node `up` and a stopped node `down`."""

    agent: AgentProcess
    up_id: str
    down_id: str
    up_pid: int = 0
    up_starts: int = 0


@pytest.mark.systemd  # both drivers when the sandbox can boot
def test_control_plane_outage_of_a_minute(
    request: pytest.FixtureRequest, plane: Plane, tmp_path: Path
) -> None:
    """One outage, both drivers at once: an agent per driver, each with a running and a stopped
    node (a minute per driver would double the longest test for no new code path: the agent's
    runtime is the same; what differs, adoption of processes vs. systemd, is checked for each).

    The control plane is down for a minute. Throughout, each running node keeps its pid and
    answers RPC, the stopped ones stay stopped. Midway each agent is SIGKILLed, the stopped
    node's unit definition removed, and the agent started again while the control plane is
    still down: from its disk cache alone it re-installs the stopped node's unit (without
    starting it) and leaves the running one as it is. When the control plane returns each agent
    reconnects and reports. The outage was the control plane's, not the executors': the feed
    shows no disconnected/reconnected pair, and the restarted agent (a new process on the same
    data directory) succeeds its predecessor without being refused as a second instance.
    """
    with contextlib.ExitStack() as stack:
        hosts = []
        for driver, sandbox in _drivers(request):
            agent = stack.enter_context(
                running_agent(plane, driver, tmp_path / f"agent-{driver}", sandbox)
            )
            host = Host(
                agent,
                up_id=create_node(plane.org, agent, "up"),
                down_id=create_node(plane.org, agent, "down", desiredState="stopped"),
            )
            # One host at a time: the next agent's port allocation sees this node's ports bound.
            wait_phase(plane.org, host.up_id, "RUNNING")
            wait_phase(plane.org, host.down_id, "STOPPED", revision=1)
            host.up_pid = single_pid(agent, "up")
            host.up_starts = start_count(agent, "up")
            assert host.up_starts == 1 and start_count(agent, "down") == 0
            assert block_count(agent, "up") == 0
            hosts.append(host)

        def nodes_as_they_were() -> None:
            for host in hosts:
                assert node_pids(host.agent, "up") == [host.up_pid], host.agent.driver
                assert block_count(host.agent, "up") == 0  # RPC answers
                assert node_pids(host.agent, "down") == [], host.agent.driver

        outage_logs = {host.agent.driver: LogWatcher(host.agent) for host in hosts}
        down_at = time.monotonic()
        plane.server.stop()
        _hold_steady(nodes_as_they_were, seconds=15)

        # An agent restarted while the control plane is away works from its disk cache.
        for host in hosts:
            host.agent.kill()
            unit_definition(host.agent, "down").unlink()
            if host.agent.driver == "systemd":
                assert host.agent.sandbox is not None
                host.agent.sandbox.systemctl("daemon-reload")
            watcher = LogWatcher(host.agent)
            host.agent.start()
            started = watcher.wait(lambda r: r.get("event") == "executor.starting", timeout=30)
            assert started["nodes"] == 2, started
            watcher.wait(lambda r: r.get("event") == "controlplane.unreachable", timeout=30)
        for host in hosts:
            wait_for(
                lambda h=host: unit_definition(h.agent, "down").exists(),
                timeout=30,
                what="the stopped node's unit re-installed from the disk cache",
            )
            assert host.agent.unit_exists("down")
            assert unit_active_state(host.agent, "down") in ("inactive", "failed")

        remaining = OUTAGE_SECONDS - (time.monotonic() - down_at)
        _hold_steady(nodes_as_they_were, seconds=max(remaining, 0))
        back_at, back_wall = time.monotonic(), datetime.now(UTC)
        plane.server.start()

        for host in hosts:
            wait_for(
                lambda h=host: _online(plane.org, h.agent.name), timeout=30, what="reconnected"
            )
        reconnect_seconds = time.monotonic() - back_at
        assert reconnect_seconds < 15, f"agents took {reconnect_seconds:.1f}s to reconnect"
        for driver, log in outage_logs.items():
            # A quiet outage: one line when the control plane went away (per agent process: it
            # was restarted midway), one when it came back; not a warning per retry.
            records = log.read()
            warnings = [r["event"] for r in records if r.get("level") in ("warning", "error")]
            assert warnings.count("controlplane.unreachable") == 2, (driver, warnings)
            assert len(warnings) <= 4, (driver, warnings)
            assert [r for r in records if r.get("event") == "controlplane.reachable"], driver

        for host in hosts:
            # Reports flow again: the running node is observed with the same process.
            reported = wait_for(
                lambda h=host: _observed_since(plane.org, h.up_id, back_wall),
                timeout=30,
                what="a fresh report",
            )
            assert reported["phase"] == "RUNNING"
            assert reported["observed"]["processes"][0]["pid"] == host.up_pid
            assert node(plane.org, host.down_id)["phase"] == "STOPPED"
            assert start_count(host.agent, "up") == host.up_starts
            assert start_count(host.agent, "down") == 0
            assert lock_failures(host.agent, "up") == 0
        nodes_as_they_were()
        # Past the control plane's start-up grace (one heartbeat timeout) and a few sweeps.
        time.sleep(max(0.0, back_at + plane.server.heartbeat_timeout + 2 - time.monotonic()))
        for host in hosts:
            types = [
                e["type"] for e in feed(plane.org, executorId=executor_id(plane.org, host.agent))
            ]
            assert "executor.disconnected" not in types and "executor.reconnected" not in types, (
                types
            )
            assert "executor.instance_refused" not in types, types


OBSERVED_NODE = """
query($id: UUID!) { node(id: $id) { phase stale observed observedAt observedRevision } }"""


def _observed_node(org: Org, node_id: str) -> dict[str, Any]:
    data: dict[str, Any] = org.owner(OBSERVED_NODE, {"id": node_id})["node"]
    return data


def _observed_since(org: Org, node_id: str, since: datetime) -> dict[str, Any] | None:
    """The node once it is not stale and was observed after `since`, else None."""
    n = _observed_node(org, node_id)
    fresh = n["observedAt"] and datetime.fromisoformat(n["observedAt"]) > since
    return n if fresh and not n["stale"] else None


# ---- 1c: the control plane restarted under a held long-poll -----------------------------------

# The agent holds its spec poll for up to 10 s (tests/support/agent.py): an agent that did not
# notice the restart would take that long, or its 20 s request timeout, to see a change.
PROMPT_SECONDS = 5.0


def test_restart_under_a_held_long_poll(
    plane: Plane, driver: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The control plane restarts (gracefully, then killed) while the agent holds a long-poll;
    a lifecycle action right after each restart reaches the agent at once and converges."""
    sandbox = request.getfixturevalue("systemd_sandbox") if driver == "systemd" else None
    kind: DriverKind = "systemd" if driver == "systemd" else "process"
    with running_agent(plane, kind, tmp_path / "agent", sandbox) as agent:
        node_id = create_node(plane.org, agent, "polled")
        wait_phase(plane.org, node_id, "RUNNING")
        pid = single_pid(agent, "polled")

        for restart, action, phase in (
            (plane.server.stop, "STOP", "STOPPED"),
            (plane.restart_hard, "START", "RUNNING"),
        ):
            time.sleep(2)  # the agent is inside a fresh long-poll
            watcher = LogWatcher(agent)
            restart()
            if plane.server.process is None:
                plane.server.start()
            acted = time.monotonic()
            revision = lifecycle(plane.org, node_id, action)

            def received(record: dict[str, Any], rev: int = revision) -> bool:
                return record.get("event") == "spec.received" and record.get("revision") == rev

            watcher.wait(received, timeout=30)
            latency = time.monotonic() - acted
            assert latency < PROMPT_SECONDS, f"{action} reached the agent after {latency:.1f}s"
            wait_phase(plane.org, node_id, phase, revision=revision, timeout=60)

        new_pid = single_pid(agent, "polled")
        assert new_pid != pid
        assert start_count(agent, "polled") == 2
