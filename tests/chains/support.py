"""Running rendered plans as real processes: what an executor does, minus systemd."""

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from nodeplane.chains.base import (
    ChainAdapter,
    NodeLayout,
    NodePlan,
    ProbeResult,
    ProcessPlan,
    RenderContext,
)
from nodeplane.chains.rpc import read_cookie
from nodeplane.protocol import NodeSpec, ProcessStatus
from tests.support.tls import TLS

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-chain-clients.sh"
LITECOIND = Path("/usr/lib/litecoin/litecoind")
ANVIL = Path("/var/cache/nodeplane/bin/anvil")


def ensure_chain_clients() -> None:
    """Install litecoind and anvil with the project's script when either is missing."""
    if not (os.access(LITECOIND, os.X_OK) and os.access(ANVIL, os.X_OK)):
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=900)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_node(
    adapter: ChainAdapter, spec: NodeSpec, root: Path, binaries: Mapping[str, Path]
) -> tuple[NodePlan, dict[str, int]]:
    """Allocate ports, render, and lay the plan's directories, files and init steps on disk."""
    ports = {p.key: free_port() for p in adapter.ports(spec)}
    ctx = RenderContext(
        node_name=root.name, layout=NodeLayout(root), ports=ports, binaries=binaries
    )
    plan = adapter.render(spec, ctx)
    for directory in plan.directories:
        (root / directory).mkdir(parents=True, exist_ok=True, mode=0o700)
    for file in plan.files:
        path = ctx.layout.config_dir / file.relative_path
        path.write_text(file.content)
        path.chmod(file.mode)
    for step in plan.init_steps:
        target = root / step.creates
        if not target.exists() and step.random_hex_bytes:
            target.write_text(secrets.token_hex(step.random_hex_bytes))
    return plan, ports


def ini_sections(conf: str) -> dict[str, dict[str, str]]:
    """Parse the INI the way Bitcoin Core does: `[section]` headers, `key=value` lines."""
    result: dict[str, dict[str, str]] = {"": {}}
    current = ""
    for raw in conf.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            current = line.strip("[]")
            assert current not in result, f"section {current} twice"
            result[current] = {}
            continue
        key, _, value = line.partition("=")
        result[current][key] = value
    return result


@dataclass
class LocalProcess:
    """One rendered process started with subprocess, logs in `<working_dir>/../<role>.log`."""

    plan: ProcessPlan
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.plan.working_dir.parent / f"{self.plan.role}.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.plan.argv,
                cwd=self.plan.working_dir,
                env={**os.environ, **self.plan.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Graceful stop with the plan's signal, then SIGKILL after a short grace."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(getattr(signal, self.plan.stop_signal))
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def rpc(self, method: str, *params: Any) -> Any:
        """A synchronous JSON-RPC call (cookie auth when the plan has one)."""
        return self.rpc_batch([(method, list(params))])[0]

    def rpc_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several JSON-RPC calls in one HTTP request; results in order."""
        assert self.plan.rpc is not None
        cookie = self.plan.rpc.cookie_file
        auth = httpx.BasicAuth(*read_cookie(cookie)) if cookie else None
        body = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
        response = httpx.post(self.plan.rpc.url, json=body, auth=auth, timeout=60, verify=TLS)
        answers = sorted(response.json(), key=lambda a: a["id"])
        for (method, _), answer in zip(calls, answers, strict=True):
            if answer.get("error"):
                raise RuntimeError(f"{method}: {answer['error']}")
        return [answer["result"] for answer in answers]


async def probe_until(
    adapter: ChainAdapter,
    process: LocalProcess,
    done: Callable[[ProbeResult], bool],
    *,
    within_s: float = 60.0,
    interval: float = 0.2,
    seen: list[ProcessStatus] | None = None,
) -> ProbeResult:
    """Probe until `done(result)`; fails with the log tail if the process dies or time runs out."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient() as http:
        while True:
            result = await adapter.probe(process.plan, http)
            if seen is not None and (not seen or seen[-1] != result.status):
                seen.append(result.status)
            if done(result):
                return result
            if not process.alive():
                raise AssertionError(f"{process.plan.client} exited:\n{process.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out at {result}:\n{process.tail()}")
            await anyio.sleep(interval)
