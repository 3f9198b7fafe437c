"""One set of driver scenarios, two drivers: what differs between them lives here."""

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nodeplane.chains.base import ProcessPlan
from nodeplane.executor.agent.driver import ActiveState, UnitSpec, UnitStatus, unit_name
from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver
from nodeplane.protocol import RestartPolicy
from tests.support.sandbox import SystemdSandbox

PYTHON = sys.executable
# A Python outside /tmp, for tests of PrivateTmp: the checkout (and its venv) may live under /tmp,
# and a unit whose executable is there rightly gets no private /tmp.
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else PYTHON
# Runs until signalled; argv[1] is a marker that finds the process in /proc.
SLEEP_FOREVER = "import signal, sys; print('up', sys.argv[1], flush=True); signal.pause()"
# Prints what it was given as one JSON line, then exits 0.
PRINT_ARGS = (
    "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
    "'env': {k: v for k, v in os.environ.items() if k.startswith('NP_')}}), flush=True)"
)
# Words a user could smuggle into a command line: each must reach the process unchanged.
HOSTILE_WORDS = [
    "$(rm -rf /)",
    '"; rm -rf / #',
    "';' ; rm",
    ";",
    "%h",
    "%%n",
    "${HOME}",
    "$HOME",
    "$$",
    "back\\slash",
    "ends with backslash\\",
    "\\n\\t",
    "two  spaces",
    " leading and trailing ",
    "",
    "-",
    "it's",
    "`id`",
    "ünïcödé → 漢字 🚀",
]


def running(status: UnitStatus) -> bool:
    return status.active_state is ActiveState.ACTIVE and bool(status.main_pid)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def lines_in(path: Path, line: str, count: int) -> bool:
    return read(path).splitlines().count(line) == count


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def wait_for_processes(marker: str, count: int, within: float = 10.0) -> list[int]:
    """Until exactly `count` processes carry `marker`."""
    deadline = time.monotonic() + within
    while len(pids := processes_with(marker)) != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker}: {len(pids)} processes, expected {count}")
        await asyncio.sleep(0.05)
    return pids


def new_marker() -> str:
    return f"np-test-{uuid.uuid4().hex[:12]}"


def processes_with(marker: str) -> list[int]:
    """Live processes on the whole machine (sandboxes included) that have `marker` in argv."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in argv and state not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


@dataclass
class DriverHarness:
    """A driver under test plus the few operations that differ between systemd and processes."""

    kind: str
    driver: SystemdDriver | ProcessDriver
    workdir: Path
    sandbox: SystemdSandbox | None = None
    names: list[str] = field(default_factory=list)

    def unit(
        self,
        policy: RestartPolicy = RestartPolicy.ON_FAILURE,
        *,
        argv: Sequence[str] | None = None,
        marker: str | None = None,
        env: Mapping[str, str] | None = None,
        working_dir: Path | None = None,
        log_file: Path | None = None,
        stop_signal: str = "SIGTERM",
        stop_timeout_s: int = 5,
        restart_delay_s: float = 0.2,
    ) -> UnitSpec:
        """A unit with a fresh node name; by default a Python program that sleeps forever."""
        node = f"t{uuid.uuid4().hex[:10]}"
        marker = marker or new_marker()
        work = working_dir or self.workdir / node / "data"
        work.mkdir(parents=True, exist_ok=True)
        name = unit_name(node, "node")
        self.names.append(name)
        return UnitSpec(
            name=name,
            node=node,
            role="node",
            process=ProcessPlan(
                role="node",
                client="python",
                version="3",
                argv=tuple(argv or (PYTHON, "-c", SLEEP_FOREVER, marker)),
                working_dir=work,
                env=dict(env or {}),
                stop_signal=stop_signal,
                stop_timeout_s=stop_timeout_s,
            ),
            restart_policy=policy,
            log_file=log_file if log_file is not None else self.workdir / node / "node.log",
            restart_delay_s=restart_delay_s,
        )

    def kill(self, pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send a signal to a unit's main pid, in the pid namespace the driver reports."""
        if self.sandbox is not None:
            self.sandbox.exec("kill", f"-{sig.value}", str(pid))
        else:
            os.kill(pid, sig)

    def definition_file(self, name: str) -> Path:
        """Where the driver keeps the unit's definition."""
        if isinstance(self.driver, SystemdDriver):
            return self.driver.unit_dir / name
        return self.driver.state_dir / f"{name}.json"

    async def wait(
        self, name: str, predicate: Callable[[UnitStatus], bool], within: float = 15.0
    ) -> UnitStatus:
        """Supervise and poll until the unit's status satisfies `predicate`."""
        deadline = time.monotonic() + within
        while True:
            await self.driver.supervise()
            status = await self.driver.status(name)
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: timed out waiting; last status {status}")
            await asyncio.sleep(0.1)

    def cleanup(self) -> None:
        """Remove every unit this test installed (a failed test must not leak processes)."""

        async def remove_all() -> None:
            for name in self.names:
                await self.driver.remove(name)

        asyncio.run(remove_all())
