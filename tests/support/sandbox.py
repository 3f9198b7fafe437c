"""A real systemd for tests, booted in its own PID and mount namespace by `systemd-sandbox`.

Code under test either runs inside (`exec`) or drives it from outside: `prefix` runs a command
inside (nsenter), and `root` (`/proc/<pid>/root`) reaches the sandbox's own file system view,
where `/run/systemd/system` and `/proc` are the sandbox's, not the machine's.
"""

import atexit
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TOOL = Path(
    os.environ.get(
        "NODEPLANE_SYSTEMD_SANDBOX",
        Path(__file__).resolve().parents[2] / "scripts" / "systemd-sandbox",
    )
)


class SystemdSandbox:
    """One sandboxed systemd; `start` boots it, `stop` ends it and every unit inside."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why a sandbox cannot be booted here, or None."""
        if os.geteuid() != 0:
            return "systemd-sandbox needs root"
        if not TOOL.exists():
            return f"{TOOL} is missing"
        if not Path("/lib/systemd/systemd").exists():
            return "systemd is not installed"
        if shutil.which("nsenter") is None:
            return "nsenter is not installed"
        return None

    def start(self) -> None:
        """Boot systemd (basic.target); returns when it is running."""
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(TOOL), "start", str(self.directory)], check=True, timeout=60)
        atexit.register(self.stop)  # also when a test session is interrupted

    def stop(self) -> None:
        """End systemd and everything inside; idempotent."""
        subprocess.run([str(TOOL), "stop", str(self.directory)], check=False, timeout=30)

    @property
    def pid(self) -> int:
        """systemd's pid as seen from the machine."""
        return int((self.directory / "systemd.pid").read_text())

    @property
    def prefix(self) -> tuple[str, ...]:
        """Prepend to a command to run it inside the sandbox (its cwd is then `/`)."""
        return ("nsenter", "--target", str(self.pid), "--pid", "--mount")

    @property
    def root(self) -> Path:
        """The sandbox's `/`, seen from outside."""
        return Path(f"/proc/{self.pid}/root")

    @property
    def unit_dir(self) -> Path:
        """The sandbox's own `/run/systemd/system`, seen from outside."""
        return self.root / "run" / "systemd" / "system"

    @property
    def proc_dir(self) -> Path:
        """The sandbox's `/proc` (its pids), seen from outside."""
        return self.root / "proc"

    def exec(
        self, *argv: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox and capture its output."""
        return subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, check=check, timeout=timeout
        )

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`systemctl args...` against the sandbox's systemd."""
        return self.exec("systemctl", "--no-pager", *args, check=check)


@contextmanager
def running_sandbox(directory: Path) -> Iterator[SystemdSandbox]:
    """A booted sandbox for the duration of the block."""
    sandbox = SystemdSandbox(directory)
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def systemd_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdSandbox]:
    """One sandboxed systemd per test session; import this fixture into a conftest to use it."""
    if reason := SystemdSandbox.unavailable_reason():
        # ./dev test installs what the sandbox needs (scripts/install-systemd-sandbox.sh): in the
        # full suite a missing part is a broken setup, not a reason to skip a third of the agent's
        # tests. Only the fast run, which installs nothing, skips.
        if os.environ.get("NODEPLANE_TEST_FAST"):
            pytest.skip(reason)
        pytest.fail(f"systemd sandbox unavailable: {reason}", pytrace=False)
    with running_sandbox(tmp_path_factory.mktemp("systemd-sandbox")) as sandbox:
        yield sandbox
