"""An agent backend on this host with real litecoind regtest nodes on the process driver.

What the agent's runtime does to a node, minus the control plane: `apply` a revision, run the
supervisor's tick (`housekeeping`), `observe`, `teardown`. Processes are counted from /proc by
their `-datadir=` word, never from the agent's own bookkeeping.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeplane.chains.installed import ADAPTERS
from nodeplane.executor.agent.backend import AgentBackend
from nodeplane.executor.agent.driver import unit_name
from nodeplane.executor.agent.main import binary_resolver
from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver
from nodeplane.protocol import AssignedNodeSpec, ExecutorCapabilities, NodeSpec
from tests.chains.support import ensure_chain_clients
from tests.support.sandbox import SystemdSandbox

LITECOIND_VERSION = "0.21.2.1"


def free_port() -> int:
    """A port the kernel says is free now (from its ephemeral range, away from client defaults)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


def litecoin_node(
    name: str, revision: int = 1, node_id: uuid.UUID | None = None, **spec: Any
) -> AssignedNodeSpec:
    """A litecoin regtest node as the control plane assigns it."""
    return AssignedNodeSpec(
        node_id=node_id or uuid.uuid4(),
        name=name,
        revision=revision,
        spec=NodeSpec.model_validate(
            {
                "chain": "litecoin",
                "network": "regtest",
                "clients": {"node": {"name": "litecoind", "version": LITECOIND_VERSION}},
                **spec,
            }
        ),
    )


def next_revision(node: AssignedNodeSpec, **changes: Any) -> AssignedNodeSpec:
    """The node's next revision with `changes` to its spec (wire names: `desiredState`, ...)."""
    assert node.spec is not None
    spec = NodeSpec.model_validate({**node.spec.model_dump(mode="json", by_alias=True), **changes})
    return node.model_copy(update={"revision": node.revision + 1, "spec": spec})


@dataclass
class LitecoinHost:
    """One agent backend, its driver (the process driver unless `sandbox`) and its nodes."""

    data_dir: Path
    sandbox: SystemdSandbox | None = None
    driver: ProcessDriver | SystemdDriver = field(init=False)
    backend: AgentBackend = field(init=False)

    def __post_init__(self) -> None:
        self.backend = self.new_backend()

    def make_driver(self) -> ProcessDriver | SystemdDriver:
        if self.sandbox is not None:
            return SystemdDriver(
                self.sandbox.unit_dir, self.sandbox.prefix, proc_dir=self.sandbox.proc_dir
            )
        return ProcessDriver(self.data_dir / "supervisor")

    def new_backend(self) -> AgentBackend:
        """A backend as a restarted agent builds it (same data dir, a new driver object)."""
        self.driver = self.make_driver()
        return AgentBackend(
            data_dir=self.data_dir,
            driver=self.driver,
            adapters=ADAPTERS,
            resolve_binary=binary_resolver(self.data_dir),
            capabilities=lambda: ExecutorCapabilities(chains=[]),
            stable_after_s=5.0,
        )

    def restart_agent(self) -> None:
        """Forget everything in memory, as a killed and restarted agent does."""
        self.backend = self.new_backend()

    def node_dir(self, name: str) -> Path:
        return self.data_dir / "nodes" / name

    def node(self, name: str, **spec: Any) -> AssignedNodeSpec:
        """A new litecoin regtest node that had ports nobody else uses.

        Left to itself the agent takes litecoind's default ports when they are free; other tests
        on this machine start regtest nodes (or hold ports on purpose) at any moment, and a
        litecoind that loses that race exits. So the node starts with free ephemeral ports in
        its ports file, as a node that had them.
        """
        root = self.node_dir(name)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        ports = {"node.rpc": free_port(), "node.p2p": free_port()}
        (root / "ports.json").write_text(json.dumps(ports))
        return litecoin_node(name, **spec)

    def state_file(self, name: str) -> Path:
        """The driver's definition of the node's litecoind unit (state file or unit file)."""
        if isinstance(self.driver, SystemdDriver):
            return self.driver.unit_dir / unit_name(name, "node")
        return self.driver.state_dir / f"{unit_name(name, 'node')}.json"

    async def main_pid(self, name: str) -> int | None:
        """The node's main pid as its driver reports it."""
        return (await self.driver.status(unit_name(name, "node"))).main_pid

    def pids(self, name: str) -> list[int]:
        """Every live litecoind on the node's data directory."""
        word = f"-datadir={self.node_dir(name) / 'data'}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if word in argv and state not in ("Z", "X"):
                found.append(int(entry.name))
        return sorted(found)

    def ports(self, name: str) -> dict[str, int]:
        ports: dict[str, int] = json.loads((self.node_dir(name) / "ports.json").read_text())
        return ports

    def conf(self, name: str) -> str:
        return (self.node_dir(name) / "config" / "litecoin.conf").read_text()

    async def wait_pid(self, name: str, within: float = 30.0, other_than: int | None = None) -> int:
        """Supervise until exactly one litecoind runs on the node (not `other_than`); its pid."""
        deadline = time.monotonic() + within
        while True:
            await self.backend.housekeeping()
            pids = self.pids(name)
            if len(pids) == 1 and pids[0] != other_than:
                return pids[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: litecoind pids {pids}, wanted one new one")
            await asyncio.sleep(0.1)

    async def wait_rpc(self, name: str, within: float = 60.0) -> None:
        """Until the node's litecoind answers RPC (it has a cookie and a chain)."""
        cookie = self.node_dir(name) / "data" / "regtest" / ".cookie"
        deadline = time.monotonic() + within
        while not cookie.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: no RPC cookie")
            await asyncio.sleep(0.1)

    async def remove_all(self) -> None:
        """Stop every unit, then kill any litecoind left on a node's data directory.

        A failed test (or the code before a fix) must not leak litecoinds, whatever state the
        supervisor's files are in.
        """
        driver = self.make_driver()
        nodes = self.data_dir / "nodes"
        names = [unit_name(d.name, "node") for d in nodes.iterdir()] if nodes.is_dir() else []
        if isinstance(driver, ProcessDriver):
            names += await driver.list_units()
        for name in names:  # only this host's units: a sandboxed systemd is shared
            with contextlib.suppress(Exception):
                await driver.remove(name)
        for node_dir in nodes.iterdir() if nodes.is_dir() else ():
            for pid in self.pids(node_dir.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextmanager
def litecoin_host(data_dir: Path, sandbox: SystemdSandbox | None = None) -> Iterator[LitecoinHost]:
    """A host whose units are all removed afterwards."""
    ensure_chain_clients()
    host = LitecoinHost(data_dir, sandbox)
    try:
        yield host
    finally:
        asyncio.run(host.remove_all())


async def wait_for(predicate: Callable[[], bool], within: float = 30.0, what: str = "") -> None:
    """Poll `predicate` until it holds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.1)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` (created if missing), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` bind-mounted onto itself read-only (what chmod cannot do to root), undone after."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
