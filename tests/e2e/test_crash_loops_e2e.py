"""A litecoind that cannot run, on both drivers: crash loops and ports another program holds.

A crash loop ends in `error` with the exit and litecoind's own last words; a loopback port another
program took is moved when the node starts; a public one is reported by port and holder, and moved
when the user restarts the node.
"""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.litecoin_nodes import LogWatcher, node_pids
from tests.e2e.scenario import ChainRpc, Fleet, litecoin_spec
from tests.support.agent import AgentProcess
from tests.support.fleet import Org

SYSTEM_PYTHON = "/usr/bin/python3"
# Listens on argv[1]:argv[2], prints its pid (in its own pid namespace), exits when stdin closes.
HOLD = (
    "import os, socket, sys; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print(os.getpid(), flush=True); "
    "sys.stdin.read()"
)


def _inside(agent: AgentProcess, *argv: str) -> list[str]:
    """`argv` run where the agent runs: inside the sandbox under systemd (its pids, its mounts)."""
    return [*agent.sandbox.prefix, *argv] if agent.sandbox is not None else list(argv)


@contextmanager
def tmpfs(agent: AgentProcess, path: Path, size: str) -> Iterator[None]:
    """A small tmpfs on `path`, seen by the agent and its nodes, for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        _inside(agent, "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)),
        check=True,
    )
    try:
        yield
    finally:
        subprocess.run(_inside(agent, "umount", "-l", str(path)), check=True)


@contextmanager
def held_port(agent: AgentProcess, port: int, address: str) -> Iterator[int]:
    """A python3 listening on `address:port` until the block ends; yields its pid."""
    proc = subprocess.Popen(
        _inside(agent, SYSTEM_PYTHON, "-c", HOLD, address, str(port)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield int(proc.stdout.readline())
        assert proc.poll() is None, "the holder must still hold the port"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def _events(fleet: Fleet, node_id: str, type_: str) -> list[dict[str, Any]]:
    return [e for e in fleet.events(node_id, type_) if e["source"] == "runtime"]


@pytest.mark.agent_supervision(restart_delay=0.3)
def test_a_crash_loop_is_an_error_that_says_why(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    name = "ltc-full"
    log = agent.node_dir(name) / "logs" / "node.log"
    # litecoind wants 50 MB free for its data; it gets a 40 MiB disk, and exits 1 at each start.
    with tmpfs(agent, agent.node_dir(name) / "data", "40m"):
        node_id = fleet.create(name, litecoin_spec())
        node = fleet.wait_phase(node_id, "ERROR", timeout=120)
        process = node["observed"]["processes"][0]
        assert process["status"] == "error"
        message = process["message"]
        assert message.startswith("exited with code 1; gave up after "), message
        assert "(a crash loop): start or restart the node to try again." in message
        assert "Error: Disk space is too low!" in message
        # Given up: no litecoind runs, none is started again.
        runs = log.read_text().count("nodeplane: exit ")
        assert runs == 5
        time.sleep(3)
        assert log.read_text().count("nodeplane: exit ") == runs
        assert node_pids(agent, name) == []
        crashed = fleet.wait(
            node_id, lambda: _events(fleet, node_id, "node.process.crashed"), "a crash event", 30
        )
        assert len(crashed) == 1 and "Disk space is too low!" in crashed[0]["message"]
        assert crashed[0]["payload"]["exitCode"] == 1
        assert ("starting", "error") in fleet.transitions(node_id)

    # Room again (the tmpfs is gone): the user's restart is a new ask, and it runs.
    fleet.lifecycle(node_id, "RESTART")
    fleet.wait_phase(node_id, "RUNNING")


def test_a_taken_loopback_port_is_moved_when_the_node_starts(
    e2e_org: Org, agent: AgentProcess
) -> None:
    fleet = Fleet(e2e_org, agent)
    name = "ltc-rpc"
    node_id = fleet.create(name, litecoin_spec())
    fleet.wait_phase(node_id, "RUNNING")
    rpc = ChainRpc.litecoin(agent.node_dir(name))
    old = rpc.port()
    fleet.lifecycle(node_id, "STOP")
    fleet.wait_phase(node_id, "STOPPED")

    with held_port(agent, old, "127.0.0.1") as holder:
        watcher = LogWatcher(agent)
        fleet.lifecycle(node_id, "START")
        fleet.wait_phase(node_id, "RUNNING", timeout=60)
        moved = watcher.wait(lambda r: r.get("event") == "ports.moved", timeout=5)
        assert moved["key"] == "node.rpc" and moved["old"] == old
        assert moved["reason"] == f"port {old} (node.rpc) is held by python3 pid {holder}"
        assert rpc.port() == moved["new"] != old
        assert rpc("getblockcount") == 0


def test_a_taken_public_port_is_named_and_moved_when_the_node_is_restarted(
    e2e_org: Org, agent: AgentProcess
) -> None:
    fleet = Fleet(e2e_org, agent)
    name = "ltc-p2p"
    node_id = fleet.create(name, litecoin_spec())
    fleet.wait_phase(node_id, "RUNNING")
    rpc = ChainRpc.litecoin(agent.node_dir(name))
    old = rpc.port("node.p2p")
    fleet.lifecycle(node_id, "STOP")
    fleet.wait_phase(node_id, "STOPPED")

    with held_port(agent, old, "0.0.0.0") as holder:
        fleet.lifecycle(node_id, "START")
        node = fleet.wait_phase(node_id, "ERROR", timeout=60)
        error = node["observed"]["applyError"]
        assert f"port {old} (node.p2p) is held by python3 pid {holder}" in error, error
        assert "restart the node to give it another port" in error
        # Peers know the node by its P2P port: it is not moved without the user asking.
        time.sleep(3)
        assert rpc.port("node.p2p") == old and node_pids(agent, name) == []
        failed = _events(fleet, node_id, "node.apply.failed")
        assert failed and f"port {old} (node.p2p)" in failed[-1]["message"]

        fleet.lifecycle(node_id, "RESTART")
        fleet.wait_phase(node_id, "RUNNING", timeout=60)
        assert rpc.port("node.p2p") != old
