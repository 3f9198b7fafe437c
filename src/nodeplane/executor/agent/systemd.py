"""The systemd driver: unit files in a unit directory, driven with `systemctl` (never a shell)."""

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nodeplane.executor.agent import procfs
from nodeplane.executor.agent.driver import (
    UNIT_PREFIX,
    UNIT_SUFFIX,
    ActiveState,
    DriverError,
    DriverProblem,
    UnitExit,
    UnitNotFound,
    UnitSpec,
    UnitStatus,
    check_unit_name,
)
from nodeplane.executor.agent.units import parse_stamp, render_unit

SHOW_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "CPUUsageNSec",
    "MemoryCurrent",
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "NeedDaemonReload",
)
# ExecMainCode= is a waitid() si_code: the main process exited, was killed, or dumped core.
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3
# systemctl's exit status for "no such unit" (LSB "program is not installed").
EXIT_NO_SUCH_UNIT = 5
_UNSET = ("", "[not set]", str(2**64 - 1))  # how `systemctl show` prints a missing number
_ACTIVE_STATES = {
    "reloading": ActiveState.ACTIVE,
    "refreshing": ActiveState.ACTIVE,
    "maintenance": ActiveState.DEACTIVATING,
}


@dataclass(frozen=True)
class CommandResult:
    """What one systemctl call returned."""

    returncode: int
    stdout: str
    stderr: str


def _number(value: str | None) -> int | None:
    if value is None or value in _UNSET:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _active_state(value: str) -> ActiveState:
    try:
        return ActiveState(value)
    except ValueError:
        return _ACTIVE_STATES.get(value, ActiveState.INACTIVE)


def main_exit(props: dict[str, str]) -> tuple[int | None, int | None]:
    """(exit code, signal) of the main process's last exit from ExecMainCode/ExecMainStatus.

    systemd resets both when the unit starts again: after an automatic restart the exit line
    in the unit's log is what is left (exits.py).
    """
    code, status = _number(props.get("ExecMainCode")), _number(props.get("ExecMainStatus"))
    if status is None:
        return None, None
    if code == CLD_EXITED:
        return status, None
    if code in (CLD_KILLED, CLD_DUMPED):
        return None, status
    return None, None


def parse_show(text: str) -> dict[str, str]:
    """`Key=Value` lines of `systemctl show` as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


class SystemdDriver:
    """Runs units through systemd.

    `command_prefix` runs systemctl elsewhere, e.g. `nsenter --target <pid> --pid --mount` to
    drive a sandboxed systemd from outside; `proc_dir` is where that systemd's processes appear
    (`/proc/<pid>/root/proc`), used for CPU time when cgroup accounting does not report it.
    """

    def __init__(
        self,
        unit_dir: Path = Path("/etc/systemd/system"),
        command_prefix: Sequence[str] = (),
        proc_dir: Path = procfs.PROC,
    ) -> None:
        self.unit_dir = unit_dir
        self.command_prefix = tuple(command_prefix)
        self.proc_dir = proc_dir
        self._reload_lock = asyncio.Lock()

    # ---- systemctl --------------------------------------------------------------------------

    async def systemctl(self, *args: str, ok: Sequence[int] = (0,)) -> CommandResult:
        """Run `systemctl args...`; DriverError unless its exit status is in `ok`."""
        argv = (*self.command_prefix, "systemctl", "--no-ask-password", *args)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        result = CommandResult(
            proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if result.returncode not in ok:
            detail = result.stderr.strip() or result.stdout.strip()
            message = f"systemctl {' '.join(args)}: exit {result.returncode}: {detail}"
            if result.returncode == EXIT_NO_SUCH_UNIT:
                raise UnitNotFound(message)
            raise DriverError(message)
        return result

    async def _daemon_reload(self) -> None:
        # One reload at a time; concurrent installs each get a reload that sees their file.
        async with self._reload_lock:
            await self.systemctl("daemon-reload")

    async def _show(self, name: str, *properties: str) -> dict[str, str]:
        result = await self.systemctl("show", "-p", ",".join(properties), "--", name)
        return parse_show(result.stdout)

    # ---- unit files -------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.unit_dir / check_unit_name(name)

    def _read(self, name: str) -> str | None:
        try:
            return self._path(name).read_text()
        except FileNotFoundError:
            return None

    def _write(self, name: str, text: str) -> None:
        """Write atomically: systemd never reads half a unit file."""
        path = self._path(name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)

    # ---- Driver -----------------------------------------------------------------------------

    def definition_text(self, unit: UnitSpec) -> str:
        """The unit file `install` writes."""
        return render_unit(unit)

    async def install(self, unit: UnitSpec) -> bool:
        """Write the unit file if it differs; daemon-reload only when something changed."""
        text = render_unit(unit)
        if unit.log_file is not None:
            # systemd creates the log file but not its directory.
            unit.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self._read(unit.name) == text:
            # Same file, but an agent killed between writing and reloading leaves systemd on
            # the old definition: NeedDaemonReload tells.
            props = await self._show(unit.name, "NeedDaemonReload")
            if props.get("NeedDaemonReload") != "yes":
                return False
        else:
            self.unit_dir.mkdir(parents=True, exist_ok=True)
            self._write(unit.name, text)
        await self._daemon_reload()
        return True

    async def _reset_start_limit(self, name: str) -> None:
        """Forget the unit's failed state and start-limit count: an explicit start is a new ask.

        Without it, a unit given up for crash-looping refuses every start (start-limit-hit)
        until its StartLimitIntervalSec= has passed.
        """
        await self.systemctl("reset-failed", "--", name, ok=(0, 1, EXIT_NO_SUCH_UNIT))

    async def start(self, name: str) -> None:
        """`systemctl start`: a no-op for a running unit."""
        check_unit_name(name)
        if self._read(name) is None:
            raise UnitNotFound(f"{name} is not installed")
        await self._reset_start_limit(name)
        await self.systemctl("start", "--", name)

    async def stop(self, name: str) -> None:
        """`systemctl stop`, waiting for the unit to be down; a no-op for an unknown unit."""
        check_unit_name(name)
        await self.systemctl("stop", "--", name, ok=(0, EXIT_NO_SUCH_UNIT))

    async def restart(self, name: str) -> None:
        """`systemctl restart`: starts a stopped unit too."""
        check_unit_name(name)
        if self._read(name) is None:
            raise UnitNotFound(f"{name} is not installed")
        await self._reset_start_limit(name)
        await self.systemctl("restart", "--", name)

    async def remove(self, name: str) -> None:
        """Stop, disable, delete the file, reload, and forget any failed state."""
        await self.stop(name)
        # Not enabled by us, but someone may have: leave no dangling wants/ symlink.
        await self.systemctl("disable", "--no-reload", "--", name, ok=(0, 1, EXIT_NO_SUCH_UNIT))
        path = self._path(name)
        if path.exists():
            path.unlink()
            await self._daemon_reload()
        await self.systemctl("reset-failed", "--", name, ok=(0, 1, EXIT_NO_SUCH_UNIT))

    async def status(self, name: str, *, usage: bool = True) -> UnitStatus:
        """The unit as `systemctl show` reports it, joined with its unit file (CPU and memory
        come with the same call: `usage` only spares the fallback's read of /proc)."""
        definition = self._read(name)
        props = await self._show(name, *SHOW_PROPERTIES)
        main_pid = _number(props.get("MainPID")) or None
        cpu_nsec = _number(props.get("CPUUsageNSec"))
        cpu_seconds = cpu_nsec / 1e9 if cpu_nsec is not None else None
        if cpu_seconds is None and main_pid is not None and usage:
            # cgroup v1 hosts often leave CPUUsageNSec unset: fall back to the main process.
            stat = procfs.read_stat(main_pid, self.proc_dir)
            cpu_seconds = stat.cpu_seconds if stat is not None else None
        exit_code, exit_signal = main_exit(props)
        stamp = parse_stamp(definition) if definition is not None else None
        if props.get("NeedDaemonReload") == "yes" and definition is not None:
            # The file was written but systemd has not read it (an agent killed before the
            # reload): what runs is not what the file says, so nothing in it counts as applied.
            definition, stamp = "", None
        return UnitStatus(
            exists=definition is not None,
            active_state=_active_state(props.get("ActiveState", "inactive")),
            sub_state=props.get("SubState") or None,
            main_pid=main_pid,
            restarts=_number(props.get("NRestarts")) or 0,
            cpu_seconds=cpu_seconds,
            memory_bytes=_number(props.get("MemoryCurrent")),
            result=props.get("Result") or None,
            definition=definition,
            exit_code=exit_code,
            exit_signal=exit_signal,
            stamp=stamp,
        )

    async def list_units(self) -> list[str]:
        """Unit files in the unit directory, plus nodeplane units systemd still has loaded."""
        names = set()
        if self.unit_dir.is_dir():
            names = {
                p.name
                for p in self.unit_dir.iterdir()
                if p.name.startswith(UNIT_PREFIX) and p.name.endswith(UNIT_SUFFIX)
            }
        result = await self.systemctl(
            "list-units", "--all", "--plain", "--no-legend", "--no-pager",
            f"{UNIT_PREFIX}*{UNIT_SUFFIX}",
        )  # fmt: skip
        names.update(line.split()[0] for line in result.stdout.splitlines() if line.strip())
        valid = set()
        for n in names:
            try:
                valid.add(check_unit_name(n))
            except ValueError:
                continue  # not one of ours (or written by hand): leave it alone
        return sorted(valid)

    async def supervise(self) -> list[UnitExit]:
        """Nothing to do: systemd applies restart policies itself."""
        return []

    def drain_problems(self) -> list[DriverProblem]:
        """None: systemd keeps its own state."""
        return []
