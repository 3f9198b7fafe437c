"""Choose and build the agent's driver: systemd when it is PID 1, else the built-in supervisor."""

from pathlib import Path
from typing import Literal

from nodeplane.executor.agent.driver import Driver
from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver

DriverKind = Literal["systemd", "process"]
DriverChoice = Literal["auto", "systemd", "process"]


def systemd_is_pid1(proc: Path = Path("/proc"), run: Path = Path("/run")) -> bool:
    """True when PID 1 is systemd and it has booted (`/run/systemd/system` exists, as sd_booted)."""
    try:
        comm = (proc / "1" / "comm").read_text().strip()
    except OSError:
        return False
    return comm == "systemd" and (run / "systemd" / "system").is_dir()


def detect_driver_kind(configured: DriverChoice = "auto") -> DriverKind:
    """The configured driver, or for "auto" the one this host supports."""
    if configured != "auto":
        return configured
    return "systemd" if systemd_is_pid1() else "process"


def make_driver(
    kind: DriverKind, *, data_dir: Path, unit_dir: Path | None = None, max_backoff_s: float = 60.0
) -> Driver:
    """The driver of `kind`: systemd units in `unit_dir`, or supervisor state under `data_dir`."""
    if kind == "systemd":
        return SystemdDriver(unit_dir or Path("/etc/systemd/system"))
    return ProcessDriver(data_dir / "supervisor", max_backoff_s=max_backoff_s)
