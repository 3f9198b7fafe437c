"""The interface between the agent and what runs processes: systemd, or the built-in supervisor."""

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from nodeplane.chains.base import ProcessPlan
from nodeplane.protocol import RestartPolicy

UNIT_PREFIX = "nodeplane-"
UNIT_SUFFIX = ".service"
# Crash loops (both drivers): a unit whose process ends CRASH_LOOP_BURST times in a row, each time
# within its stable window (UnitSpec.stable_after_s) of starting, is given up: `failed`, no more
# automatic restarts, until an explicit start or restart. systemd gets the same rule as
# StartLimitBurst= and StartLimitIntervalSec= (units.py).
CRASH_LOOP_BURST = 5
# Unit names become file names: a safe alphabet, no '/', no leading dot, bounded length.
_UNIT_NAME = re.compile(r"^nodeplane-[a-z0-9][a-z0-9-]{0,126}\.service$")


class DriverError(Exception):
    """A driver operation failed (systemctl said no, a process could not be spawned, ...)."""


class UnitNotFound(DriverError):
    """The unit has no definition installed."""


def unit_name(node: str, role: str) -> str:
    """`nodeplane-<node>-<role>.service`; node and role are validated identifiers."""
    return check_unit_name(f"{UNIT_PREFIX}{node}-{role}{UNIT_SUFFIX}")


def check_unit_name(name: str) -> str:
    """`name` if it is a nodeplane unit name that is safe to use as a file name, else ValueError."""
    if not _UNIT_NAME.fullmatch(name):
        raise ValueError(f"{name[:80]!r} is not a nodeplane unit name (nodeplane-<node>-<role>)")
    return name


@dataclass(frozen=True)
class Stamp:
    """What was applied to a unit, written into its definition (like Kubernetes' restartedAt).

    `pending_restart` is set on a definition installed just before the restart (or start) it was
    installed for, and cleared once that is done: an agent killed in between does it again.
    """

    revision: int
    restart_generation: int
    pending_restart: bool = False


@dataclass(frozen=True)
class UnitSpec:
    """One process of a node as the driver should run it."""

    name: str  # unit name, e.g. nodeplane-ltc-1-node.service
    node: str
    role: str
    process: ProcessPlan
    restart_policy: RestartPolicy
    cpu_limit: float | None = None  # cores
    memory_limit_bytes: int | None = None
    log_file: Path | None = None  # None: the journal (systemd) or <working_dir>/../logs/<role>.log
    restart_delay_s: float = 5.0  # systemd's RestartSec=; the process driver's first backoff step
    # A process that ran this long was not crash-looping: its exit starts the count afresh.
    stable_after_s: float = 30.0
    stamp: Stamp | None = None  # None: a definition without a stamp (as older agents wrote)


class ActiveState(StrEnum):
    """The unit's state, in systemd's words."""

    ACTIVE = "active"
    ACTIVATING = "activating"  # starting, or waiting to be restarted after an exit
    DEACTIVATING = "deactivating"
    INACTIVE = "inactive"
    FAILED = "failed"


@dataclass(frozen=True)
class UnitStatus:
    """What the driver sees of one unit now."""

    exists: bool
    active_state: ActiveState
    main_pid: int | None = None
    restarts: int = 0  # automatic restarts since the last explicit start/stop (systemd's NRestarts)
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    # Why it last stopped, in systemd's words: success, exit-code, signal, core-dump, timeout, ...
    # (the process driver adds "unknown": an adopted process vanished and its exit status is lost).
    result: str | None = None
    definition: str | None = None  # the installed definition (unit file text), for drift checks
    sub_state: str | None = None  # finer state: running, dead, auto-restart, ...
    # How the main process last ended, when the driver knows: an exit code or a signal number
    # (systemd's ExecMainCode/ExecMainStatus, which it forgets when the unit starts again).
    exit_code: int | None = None
    exit_signal: int | None = None
    stamp: Stamp | None = None  # the stamp in the installed definition


@dataclass(frozen=True)
class UnitExit:
    """An exit the process driver noticed while supervising (systemd handles its own)."""

    name: str
    result: str
    exit_code: int | None
    exit_signal: int | None
    will_restart: bool


@dataclass(frozen=True)
class DriverProblem:
    """Trouble the driver handled on its own that an operator should hear of (an event)."""

    unit: str
    message: str
    path: Path | None = None  # a state file found unreadable
    moved_to: Path | None = None  # where it was moved aside


class Driver(Protocol):
    """Runs units. Every method is idempotent: the reconciler calls them again on every tick."""

    def definition_text(self, unit: UnitSpec) -> str:
        """The definition `install(unit)` materializes, as `status().definition` shows it (pure)."""
        ...

    async def install(self, unit: UnitSpec) -> bool:
        """Write or update the unit's definition; True if it changed (restart to apply it)."""
        ...

    async def start(self, name: str) -> None:
        """Start the unit if it is not running; UnitNotFound if it is not installed."""
        ...

    async def stop(self, name: str) -> None:
        """Stop the unit gracefully (its stop signal, then SIGKILL after its timeout)."""
        ...

    async def restart(self, name: str) -> None:
        """Stop then start."""
        ...

    async def remove(self, name: str) -> None:
        """Stop the unit and remove its definition."""
        ...

    async def status(self, name: str, *, usage: bool = True) -> UnitStatus:
        """The unit's current state; CPU and memory only with `usage` (they may cost a scan)."""
        ...

    async def list_units(self) -> list[str]:
        """Names of every nodeplane unit the driver knows."""
        ...

    async def supervise(self) -> list[UnitExit]:
        """Apply restart policies to exited units; call every reconcile tick (no-op on systemd)."""
        ...

    def drain_problems(self) -> list[DriverProblem]:
        """Problems handled since the last call (an unreadable state file moved aside, ...)."""
        ...
