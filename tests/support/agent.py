"""A real `nodeplane agent` for end-to-end tests: on the process driver, or under a sandboxed systemd.

Under systemd the agent itself runs as a transient service inside the sandbox (as `nodeplane agent
install` would run it), so its node units are siblings in the same systemd; killing the agent's
service never touches them. On the process driver the agent is a plain child of the test.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nodeplane.executor.agent.ports import DEFAULT_SEARCH
from tests.support.sandbox import SystemdSandbox

ANVIL = Path("/var/cache/nodeplane/bin/anvil")

DriverKind = Literal["systemd", "process"]


def worker_ports_section() -> str:
    """Under pytest-xdist, each worker's agents take ports from a range of their own (the
    agent's `[ports]`): clients' defaults (litecoin regtest's 19443/19444) are the same for
    every worker, and an agent cannot see the ports another worker's stopped node holds.
    Without workers, no section: the agent chooses as a user's would."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not worker.startswith("gw") or count < 2:
        return ""
    index = int(worker[2:])
    size = (DEFAULT_SEARCH.last - DEFAULT_SEARCH.first + 1) // count
    first = DEFAULT_SEARCH.first + index * size
    return f"\n[ports]\nfirst = {first}\nlast = {first + size - 1}\n"


@dataclass
class AgentProcess:
    """One agent process with its own data directory and config file."""

    workdir: Path
    server_url: str
    api_key: str
    driver: DriverKind
    sandbox: SystemdSandbox | None = None
    name: str = field(default_factory=lambda: f"host-{uuid.uuid4().hex[:6]}")
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # agent.toml's [supervision] (restart_delay, stable_after, max_backoff), when set.
    supervision: dict[str, float] = field(default_factory=dict)
    # agent.toml's [metrics] listen (host:port), when set.
    metrics_listen: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.toml"

    @property
    def unit(self) -> str:
        return f"nodeplane-agent-{self.name}.service"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def write_config(self) -> None:
        """agent.toml with fast loops, so tests converge in seconds."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        unit_dir = (
            "/run/systemd/system" if self.driver == "systemd" else str(self.workdir / "units")
        )
        self.config_path.write_text(
            f"""
[agent]
name = "{self.name}"
data_dir = "{self.data_dir}"
driver = "{self.driver}"
unit_dir = "{unit_dir}"

[control_plane]
url = "{self.server_url}"
api_key = "{self.api_key}"

[intervals]
heartbeat = 1
reconcile = 1
report = 2
metrics = 2
poll_wait = 10

[logging]
level = "info"
format = "json"
"""
            + worker_ports_section()
            + "".join(
                ["\n[supervision]\n", *(f"{k} = {v}\n" for k, v in self.supervision.items())]
                if self.supervision
                else []
            )
            + (f'\n[metrics]\nlisten = "{self.metrics_listen}"\n' if self.metrics_listen else "")
        )
        # Binaries come from the host's PATH or <data_dir>/bin: offer anvil the second way.
        bin_dir = self.data_dir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        if ANVIL.exists() and not (bin_dir / "anvil").exists():
            (bin_dir / "anvil").symlink_to(ANVIL.resolve())
        # Older anvil releases the install script put beside it (bin/anvil-<version>).
        for extra in sorted(ANVIL.parent.glob("anvil-*")):
            if extra.exists() and not (bin_dir / extra.name).exists():
                (bin_dir / extra.name).symlink_to(extra.resolve())

    def _argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "nodeplane",
            "agent",
            "run",
            "--config",
            str(self.config_path),
        ]

    def start(self) -> None:
        """Start (or start again) the agent."""
        if not self.config_path.exists():
            self.write_config()
        self.starts += 1
        if self.driver == "systemd":
            assert self.sandbox is not None
            self.sandbox.systemctl("reset-failed", self.unit, check=False)
            self.sandbox.exec(
                "systemd-run",
                f"--unit={self.unit}",
                "--property=Restart=no",
                f"--property=StandardOutput=append:{self.log_path}",
                f"--property=StandardError=append:{self.log_path}",
                "--setenv=PYTHONUNBUFFERED=1",
                # The code under test where the run chose it (a worktree), as the process driver's
                # agent inherits it.
                *(
                    [f"--setenv=PYTHONPATH={os.environ['PYTHONPATH']}"]
                    if os.environ.get("PYTHONPATH")
                    else []
                ),
                f"--working-directory={self.workdir}",
                *self._argv(),
            )
            return
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self._argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env={**os.environ}
        )

    def kill(self) -> None:
        """SIGKILL the agent (only the agent: its nodes keep running)."""
        if self.driver == "systemd":
            assert self.sandbox is not None
            self.sandbox.systemctl("kill", "--signal=SIGKILL", self.unit, check=False)
            self._wait_systemd_inactive()
            return
        if self.popen is not None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)
            self.popen = None

    def stop(self) -> None:
        """Stop the agent gracefully."""
        if self.driver == "systemd":
            assert self.sandbox is not None
            self.sandbox.systemctl("stop", self.unit, check=False)
            self.sandbox.systemctl("reset-failed", self.unit, check=False)
            return
        if self.popen is not None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            self.popen = None

    def _wait_systemd_inactive(self, timeout: float = 30) -> None:
        assert self.sandbox is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.sandbox.systemctl("is-active", self.unit, check=False).stdout.strip()
            if state in ("inactive", "failed", "unknown"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.unit} still {state}")

    def node_dir(self, name: str) -> Path:
        """`<data_dir>/nodes/<name>`."""
        return self.data_dir / "nodes" / name

    def unit_exists(self, node: str, role: str = "node") -> bool:
        """Whether the node's unit is known to the driver (file for systemd, state for process)."""
        unit = f"nodeplane-{node}-{role}.service"
        if self.driver == "systemd":
            assert self.sandbox is not None
            return (self.sandbox.unit_dir / unit).exists()
        return (self.data_dir / "supervisor" / f"{unit}.json").exists()

    def main_pid(self, node: str, role: str = "node") -> int | None:
        """The main pid of a node's unit as the driver sees it (sandbox pid under systemd)."""
        unit = f"nodeplane-{node}-{role}.service"
        if self.driver == "systemd":
            assert self.sandbox is not None
            out = self.sandbox.systemctl("show", "-p", "MainPID", "--value", unit, check=False)
            pid = int(out.stdout.strip() or 0)
            return pid or None
        import json

        path = self.data_dir / "supervisor" / f"{unit}.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        runtime = data.get("runtime", {})
        pid = runtime.get("pid")
        return int(pid) if pid else None
