"""Ports another program holds: a bind test, then who holds it, from /proc.

A node's ports are allocated once and kept (ports.py); another program may take one later, while
the node is down. Its client then fails to start and crash-loops ("Unable to bind any endpoint
for RPC server"). Before the agent starts a unit it checks the unit's ports here, and names the
holder: the listening socket's inode from `/proc/net/tcp` and `/proc/net/tcp6` (for a port the
client also binds over UDP, the bound socket's from `/proc/net/udp` and `/proc/net/udp6`), then
the process with that socket among its `/proc/<pid>/fd` links. A holder in another pid namespace,
or one the agent may not inspect, is "another program". A holder working in
the node's own directory is the node's own process (one the driver lost track of, which the next
start adopts): no other program.
"""

import contextlib
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nodeplane.chains.base import TCP_ONLY, PortDef, Protocol
from nodeplane.executor.agent.procfs import PROC

# The st column of /proc/net/{tcp,udp}: a TCP socket listening (TCP_LISTEN), a UDP socket bound
# and not connected (TCP_CLOSE, which is how the kernel shows an unconnected UDP socket).
_HOLDING_STATE = {Protocol.TCP: "0A", Protocol.UDP: "07"}
_TABLES = {Protocol.TCP: ("tcp", "tcp6"), Protocol.UDP: ("udp", "udp6")}


@dataclass(frozen=True)
class PortHolder:
    """A process that holds a port."""

    pid: int
    command: str  # /proc/<pid>/comm
    cwd: str | None = field(default=None, compare=False)  # /proc/<pid>/cwd, if readable


@dataclass(frozen=True)
class TakenPort:
    """One of a node's ports that this host will not let it bind."""

    key: str  # PortDef.key, `<role>.<name>`
    port: int
    public: bool  # others depend on it (P2P): never moved without the user asking
    holders: tuple[PortHolder, ...] = ()

    def describe(self) -> str:
        """'port 19332 (node.rpc) is held by python3 pid 1234'."""
        if not self.holders:
            who = "another program"
        else:
            who = ", ".join(f"{h.command} pid {h.pid}" for h in self.holders)
        return f"port {self.port} ({self.key}) is held by {who}"


def bindable(port: int, public: bool, protocols: tuple[Protocol, ...] = TCP_ONLY) -> bool:
    """Whether a client could bind `port` now with each of `protocols` (all interfaces if
    public, else loopback)."""
    for protocol in protocols:
        kind = socket.SOCK_STREAM if protocol == Protocol.TCP else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            if protocol == Protocol.TCP:
                # Connections of an earlier run in TIME_WAIT do not keep a restarted client out.
                # (Not for UDP, where SO_REUSEADDR would let two sockets share the port.)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0" if public else "127.0.0.1", port))
            except OSError:
                return False
    return True


def listening_inodes(
    port: int, proc: Path = PROC, protocols: tuple[Protocol, ...] = TCP_ONLY
) -> set[int]:
    """Inodes of the sockets holding `port` (any address, IPv4 or IPv6): TCP ones listening,
    UDP ones bound."""
    inodes: set[int] = set()
    for protocol in protocols:
        for table in _TABLES[protocol]:
            try:
                lines = (proc / "net" / table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
                if len(fields) < 10 or fields[3] != _HOLDING_STATE[protocol]:
                    continue
                with contextlib.suppress(ValueError):
                    if int(fields[1].rpartition(":")[2], 16) == port and int(fields[9]):
                        inodes.add(int(fields[9]))
    return inodes


def socket_holders(inodes: set[int], proc: Path = PROC) -> list[PortHolder]:
    """Processes that have one of the sockets `inodes` open."""
    if not inodes:
        return []
    links = {f"socket:[{inode}]" for inode in inodes}
    holders = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target in links:
                try:
                    command = (entry / "comm").read_text().strip()
                except OSError:
                    command = "?"
                try:
                    cwd: str | None = str((entry / "cwd").readlink())
                except OSError:
                    cwd = None
                holders.append(PortHolder(int(entry.name), command, cwd))
                break
    return sorted(holders, key=lambda h: h.pid)


def taken_ports(
    ports: Mapping[str, int],
    defs: Iterable[PortDef],
    proc: Path = PROC,
    own_dir: Path | None = None,
) -> list[TakenPort]:
    """Those of `ports` (key -> number, for the ports in `defs`) another program holds now.

    A port whose holders all work under `own_dir` (the node's directory) is held by the node
    itself, not taken.
    """
    taken = []
    for d in defs:
        port = ports.get(d.key)
        if port is None or bindable(port, d.public, d.protocols):
            continue
        holders = tuple(socket_holders(listening_inodes(port, proc, d.protocols), proc))
        if own_dir is not None and holders and all(_works_in(h, own_dir) for h in holders):
            continue
        taken.append(TakenPort(d.key, port, d.public, holders))
    return taken


def _works_in(holder: PortHolder, directory: Path) -> bool:
    return holder.cwd is not None and Path(holder.cwd).is_relative_to(directory.resolve())


def movable(taken: TakenPort, *, restart_requested: bool) -> bool:
    """Whether the agent may give the node another port instead of `taken`.

    Loopback ports (RPC, ZMQ, engine API, metrics) only serve the node's own clients and the
    agent's probes: they are moved whenever they are found taken. Public ports (P2P) are what
    peers and firewalls know the node by: only an explicit restart of the node, its user
    asking, moves them.
    """
    return restart_requested or not taken.public
