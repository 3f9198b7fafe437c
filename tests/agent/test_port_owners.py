"""Who holds a port: a real listener in another process, found through this machine's /proc."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nodeplane.chains.base import TCP_AND_UDP, UDP_ONLY, PortDef
from nodeplane.executor.agent.port_owners import (
    PortHolder,
    TakenPort,
    bindable,
    listening_inodes,
    movable,
    taken_ports,
)

SYSTEM_PYTHON = "/usr/bin/python3"
# Binds a UDP socket on argv[1]:argv[2], prints its pid and port, exits when stdin closes.
HOLD_UDP = (
    "import os, socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind((sys.argv[1], int(sys.argv[2]))); "
    "print(os.getpid(), s.getsockname()[1], flush=True); sys.stdin.read()"
)
# Listens on argv[1]:argv[2] (port 0: any), prints its pid and port, exits when stdin closes.
HOLD = (
    "import os, socket, sys; s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] "
    "else socket.AF_INET); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); "
    "print(os.getpid(), s.getsockname()[1], flush=True); sys.stdin.read()"
)


@contextmanager
def _holding(cwd: Path) -> Iterator[tuple[int, int]]:
    """A python3 working in `cwd` listening on a loopback port: (its pid, the port)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, "127.0.0.1", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        pid, port = (int(w) for w in proc.stdout.readline().split())
        yield pid, port
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.fixture
def holder() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A python3 listening on 127.0.0.1: (process, its pid, the port)."""
    exe = SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable
    proc = subprocess.Popen(
        [exe, "-c", HOLD, "127.0.0.1", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    pid, port = (int(w) for w in proc.stdout.readline().split())
    yield proc, pid, port
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


@pytest.mark.process
def test_a_held_port_is_named_by_its_holder(holder: tuple[subprocess.Popen[str], int, int]) -> None:
    proc, pid, port = holder
    assert not bindable(port, public=False) and not bindable(port, public=True)
    assert listening_inodes(port)
    defs = [PortDef("node", "rpc", 1), PortDef("node", "p2p", 2, public=True)]
    free = _free_port()
    taken = taken_ports({"node.rpc": port, "node.p2p": free}, defs)
    command = "python3" if proc.args[0] == SYSTEM_PYTHON else taken[0].holders[0].command
    assert taken == [TakenPort("node.rpc", port, False, (PortHolder(pid, command),))]
    assert taken[0].describe() == f"port {port} (node.rpc) is held by {command} pid {pid}"


@pytest.mark.process
def test_a_port_the_nodes_own_process_holds_is_not_taken(tmp_path: Path) -> None:
    """A holder working in the node's directory is the node's own process (one whose unit
    record was lost, which the next start adopts), not another program."""
    node_dir = tmp_path / "nodes" / "ltc"
    (node_dir / "data").mkdir(parents=True)
    with _holding(node_dir / "data") as (pid, port):
        defs = [PortDef("node", "rpc", 1)]
        assert taken_ports({"node.rpc": port}, defs, own_dir=node_dir) == []
        other = tmp_path / "nodes" / "other"
        other.mkdir()
        taken = taken_ports({"node.rpc": port}, defs, own_dir=other)
        assert [(t.port, [h.pid for h in t.holders]) for t in taken] == [(port, [pid])]


def _udp_holder() -> tuple["subprocess.Popen[str]", int, int]:
    """A process holding a UDP port the kernel picked whose number is free over TCP too (with
    other tests running, the same number may be some connection's TCP port at that moment)."""
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_UDP, "0.0.0.0", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        pid, port = (int(w) for w in proc.stdout.readline().split())
        if bindable(port, public=True):
            return proc, pid, port
        proc.stdin.close()
        proc.wait(timeout=10)
    raise AssertionError("no UDP port picked by the kernel was free over TCP in 20 tries")


@pytest.mark.process
def test_a_port_held_over_udp_is_taken_for_a_port_that_binds_udp() -> None:
    """A P2P port's UDP side (discovery) held by another program is found and named; a port
    the client binds over TCP alone is not taken by it."""
    proc, pid, port = _udp_holder()
    assert proc.stdin is not None
    try:
        assert bindable(port, public=True)
        assert not bindable(port, public=True, protocols=TCP_AND_UDP)
        assert not bindable(port, public=False, protocols=UDP_ONLY)
        defs = [
            PortDef("consensus", "p2p", 1, public=True, protocols=TCP_AND_UDP),
            PortDef("consensus", "quic", 2, public=True, protocols=UDP_ONLY),
            PortDef("execution", "p2p", 3, public=True),
        ]
        ports = {"consensus.p2p": port, "consensus.quic": port, "execution.p2p": port}
        taken = taken_ports(ports, defs)
        assert [t.key for t in taken] == ["consensus.p2p", "consensus.quic"]
        assert all([h.pid for h in t.holders] == [pid] for t in taken)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_free_ports_are_not_taken() -> None:
    port = _free_port()
    assert bindable(port, public=True)
    assert taken_ports({"node.rpc": port}, [PortDef("node", "rpc", 1)]) == []
    assert listening_inodes(port) == set()


def test_a_holder_out_of_sight_is_another_program() -> None:
    assert (
        TakenPort("node.p2p", 9, True).describe() == "port 9 (node.p2p) is held by another program"
    )


@pytest.mark.parametrize(
    ("public", "restart", "moved"),
    [(False, False, True), (False, True, True), (True, False, False), (True, True, True)],
)
def test_only_an_explicit_restart_moves_a_public_port(
    public: bool, restart: bool, moved: bool
) -> None:
    assert movable(TakenPort("k", 1, public), restart_requested=restart) is moved


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
    return port
