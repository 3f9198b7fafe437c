"""The built-in supervisor, for hosts where systemd is not PID 1 (a laptop, a container).

Same semantics as the systemd driver: one state file per unit under `state_dir` holds its
definition and what runs it (pid plus the process's start time from /proc, so a reused pid is never
taken for ours); each process runs in a session of its own with stdout and stderr appended to its
log file; stop sends the stop signal to the session's process group, waits up to the stop timeout,
then SIGKILLs it; `supervise()`, called by the reconciler every tick, restarts exited units as
their restart policy says, with a backoff, and gives up on a unit that crash-loops
(CRASH_LOOP_BURST quick exits in a row: `failed`, as systemd's start limit). A new driver on the
same `state_dir` (the agent restarted) adopts the processes that still run instead of starting
duplicates. When the driver is the parent it reaps its children and knows how they exited; an
adopted process that vanishes counts as a failure, since its exit status is lost. Each exit is
also written to the unit's log as the exit line systemd's `ExecStopPost=` writes (exits.py).
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from nodeplane.executor.agent import procfs
from nodeplane.executor.agent.driver import (
    CRASH_LOOP_BURST,
    ActiveState,
    DriverError,
    DriverProblem,
    Stamp,
    UnitExit,
    UnitNotFound,
    UnitSpec,
    UnitStatus,
    check_unit_name,
)
from nodeplane.executor.agent.exits import exit_line
from nodeplane.executor.agent.statefile import (
    FileKey,
    file_key,
    make_directory,
    move_aside,
    settled,
    write_atomic,
)
from nodeplane.executor.agent.units import render_unit, signal_name
from nodeplane.protocol import RestartPolicy

log = structlog.get_logger(__name__)

# What systemd gives a service: a fixed PATH and the unit's own variables, nothing inherited.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# systemd's "clean" exits for Restart=on-failure: status 0 or death by one of these signals.
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})
# Exit statuses systemd uses when it cannot exec the command or enter the working directory.
EXIT_CHDIR = 200
EXIT_EXEC = 203
# Set in each process's environment (like systemd's INVOCATION_ID): finds a process whose spawn
# an agent killed mid-start never got to record.
INVOCATION_ENV = "NODEPLANE_INVOCATION_ID"
STATE_SUFFIX = ".json"
POLL_S = 0.1
# How long one scan of /proc answers `status()`'s CPU and memory: every reconcile and report asks
# for each unit's status, and a scan per call (it reads every process's stat) made the agent's
# CPU grow as units x processes on the host, most of its cost with 50 nodes.
USAGE_SCAN_MAX_AGE_S = 1.0
KILL_WAIT_S = 10.0  # how long SIGKILLed processes may take to go before stop gives up


@dataclass(frozen=True)
class Definition:
    """A unit as installed: everything needed to (re)start it, compared on install."""

    name: str
    node: str
    role: str
    argv: list[str]
    working_dir: str
    env: dict[str, str]
    stop_signal: str
    stop_timeout_s: float
    restart_policy: str
    restart_delay_s: float
    log_file: str
    cpu_limit: float | None = None  # recorded; without cgroups the supervisor cannot enforce it
    memory_limit_bytes: int | None = None
    stable_after_s: float = 30.0  # a run this long is not a quick exit (crash-loop count)
    # The agent's stamp (driver.Stamp); absent from state files older agents wrote.
    revision: int | None = None
    restart_generation: int | None = None
    pending_restart: bool = False

    @property
    def stamp(self) -> Stamp | None:
        """The stamp, if the definition has one."""
        if self.revision is None or self.restart_generation is None:
            return None
        return Stamp(self.revision, self.restart_generation, self.pending_restart)


@dataclass
class Runtime:
    """What the supervisor knows of a unit's process."""

    wanted: bool = False  # explicitly started and not stopped since: restart policy applies
    state: str = ActiveState.INACTIVE.value
    sub_state: str = "dead"
    pid: int | None = None
    start_time: int | None = None  # /proc/<pid>/stat field 22
    boot_id: str | None = None
    started_at: float | None = None  # wall clock, for the backoff
    restarts: int = 0
    result: str | None = None
    exit_code: int | None = None  # of the main process's last exit: kept across restarts
    exit_signal: int | None = None
    restart_at: float | None = None
    # Consecutive exits soon after start: the backoff exponent, and the crash-loop count.
    quick_failures: int = 0
    exit_reported: bool = True
    invocation: str | None = None  # saved before each spawn, cleared once its process is gone


@dataclass(frozen=True)
class _Cached:
    """A state file as last read or written: reused while the file is unchanged."""

    key: FileKey  # of the file read
    definition: "Definition"
    definition_text: str
    runtime: "Runtime"
    trusted: bool  # read well after its last change: an unchanged key means unchanged content


@dataclass
class Record:
    """One unit's state file."""

    definition: Definition
    runtime: Runtime = field(default_factory=Runtime)

    def to_json(self) -> str:
        return json.dumps(
            {"definition": asdict(self.definition), "runtime": asdict(self.runtime)}, indent=2
        )

    @classmethod
    def from_json(cls, text: str) -> "Record":
        data: dict[str, Any] = json.loads(text)
        return cls(Definition(**data["definition"]), Runtime(**data["runtime"]))


def definition_of(unit: UnitSpec) -> Definition:
    """The stored definition of `unit` (default log: `<working_dir>/../logs/<role>.log`)."""
    # The systemd driver's refusals hold here too (relative executable, control characters, ...):
    # a spec must not run on one driver and be refused by the other.
    render_unit(unit)
    plan = unit.process
    log_file = unit.log_file or plan.working_dir.parent / "logs" / f"{unit.role}.log"
    return Definition(
        name=check_unit_name(unit.name),
        node=unit.node,
        role=unit.role,
        argv=list(plan.argv),
        working_dir=str(plan.working_dir),
        env=dict(plan.env),
        stop_signal=signal_name(plan.stop_signal),
        stop_timeout_s=float(plan.stop_timeout_s),
        restart_policy=RestartPolicy(unit.restart_policy).value,
        restart_delay_s=float(unit.restart_delay_s),
        log_file=str(log_file),
        cpu_limit=unit.cpu_limit,
        memory_limit_bytes=unit.memory_limit_bytes,
        stable_after_s=float(unit.stable_after_s),
        revision=unit.stamp.revision if unit.stamp else None,
        restart_generation=unit.stamp.restart_generation if unit.stamp else None,
        pending_restart=unit.stamp.pending_restart if unit.stamp else False,
    )


def definition_text(definition: Definition) -> str:
    """A definition as `status().definition` shows it."""
    return json.dumps(asdict(definition), sort_keys=True)


def exit_result(exit_code: int | None, exit_signal: int | None) -> str:
    """systemd's Result= for an exit: success, exit-code, signal, or unknown (adopted, lost)."""
    if exit_signal is not None:
        return "success" if exit_signal in CLEAN_SIGNALS else "signal"
    if exit_code is None:
        return "unknown"
    return "success" if exit_code == 0 else "exit-code"


def should_restart(policy: str, result: str) -> bool:
    """Restart=always restarts on any exit, on-failure on an unclean one, no never."""
    match RestartPolicy(policy):
        case RestartPolicy.ALWAYS:
            return True
        case RestartPolicy.ON_FAILURE:
            return result != "success"
        case _:
            return False


class ProcessDriver:
    """Supervises unit processes itself; state survives the agent in `state_dir`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        max_backoff_s: float = 60.0,
        proc_dir: Path = procfs.PROC,
    ) -> None:
        self.state_dir = state_dir
        self.max_backoff_s = max_backoff_s
        self.proc_dir = proc_dir
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._problems: list[DriverProblem] = []
        # Stops a killed agent left half done, finished in the background: one task per unit.
        self._finishing: dict[str, asyncio.Task[None]] = {}
        self._sessions: dict[int, list[procfs.ProcStat]] = {}
        self._sessions_at = -USAGE_SCAN_MAX_AGE_S
        # Every reconcile, report and supervision pass asks for each unit's record: parsing each
        # state file every time was a tenth of an agent's CPU with 50 nodes. A record is read
        # again only when its file changed (or may have: statefile.settled).
        self._records: dict[str, _Cached] = {}
        self._boot_id: str | None = None

    # ---- state files ------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.state_dir / f"{check_unit_name(name)}{STATE_SUFFIX}"

    def _load(self, name: str) -> Record | None:
        """The unit's record; None if it has none, or had an unreadable one (moved aside).

        A unit whose state file was moved aside is installed afresh by the next apply, which
        adopts its process if it still runs (`start` looks for it before spawning). The record
        is the caller's to change: a copy of what is cached.
        """
        path = self._path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._records.pop(name, None)
            return None
        cached = self._records.get(name)
        if cached is None or not cached.trusted or cached.key != file_key(st):
            cached = self._read(name, path, st)
            if cached is None:
                return None
        return Record(cached.definition, replace(cached.runtime))

    def _read(self, name: str, path: Path, st: os.stat_result) -> _Cached | None:
        """Read and parse the state file (`st`: its stat, taken just before), and cache it."""
        self._records.pop(name, None)
        try:
            record = Record.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            moved = move_aside(path)
            problem = DriverProblem(
                unit=name,
                message=f"{path}: unreadable state file ({exc}); moved aside to "
                f"{moved.name if moved else '(gone)'}, the unit is installed again",
                path=path,
                moved_to=moved,
            )
            log.error("supervisor.state_file_unreadable", unit=name, error=problem.message)
            self._problems.append(problem)
            return None
        return self._remember(name, record, st)

    def _remember(self, name: str, record: Record, st: os.stat_result) -> _Cached:
        cached = _Cached(
            key=file_key(st),
            definition=record.definition,
            definition_text=definition_text(record.definition),
            runtime=replace(record.runtime),
            trusted=settled(st),
        )
        self._records[name] = cached
        return cached

    def _save(self, record: Record) -> None:
        path = self._path(record.definition.name)
        # Definitions may carry secrets in their environment: the directory is the agent's alone.
        make_directory(self.state_dir, 0o700)
        self._records.pop(record.definition.name, None)
        write_atomic(path, record.to_json(), 0o600)
        self._remember(record.definition.name, record, path.stat())

    def _definition_text(self, record: Record) -> str:
        cached = self._records.get(record.definition.name)
        if cached is not None and cached.definition is record.definition:
            return cached.definition_text
        return definition_text(record.definition)

    def drain_problems(self) -> list[DriverProblem]:
        """State files found unreadable (and moved aside) since the last call."""
        problems, self._problems = self._problems, []
        return problems

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # ---- processes --------------------------------------------------------------------------

    def _this_boot(self) -> str:
        # Read once: a boot outlives the agent, and an adopted unit's liveness check asks for it.
        if self._boot_id is None:
            self._boot_id = procfs.boot_id(self.proc_dir)
        return self._boot_id

    def _alive(self, name: str, rt: Runtime) -> bool:
        """Is the recorded process still ours and running? Reaps it if we are its parent."""
        if rt.pid is None:
            return False
        child = self._children.get(name)
        if child is not None and child.pid == rt.pid:
            return child.poll() is None
        stat = procfs.read_stat(rt.pid, self.proc_dir)
        return (
            stat is not None
            and stat.alive
            and stat.start_time == rt.start_time
            and rt.boot_id == self._this_boot()
        )

    def _exit_status(self, name: str, rt: Runtime) -> tuple[int | None, int | None]:
        """(exit code, signal) of the exited process, or (None, None) if it was adopted."""
        child = self._children.pop(name, None)
        if child is None or child.pid != rt.pid or child.returncode is None:
            return None, None
        code = child.returncode
        return (None, -code) if code < 0 else (code, None)

    def _spawn(self, record: Record) -> None:
        """Start the process in a session of its own, output appended to its log file."""
        d, rt = record.definition, record.runtime
        log = Path(d.log_file)
        log.parent.mkdir(parents=True, exist_ok=True)
        rt.invocation = uuid.uuid4().hex
        self._save(record)  # from here on, a restarted agent finds the process by its invocation
        rt.wanted, rt.restart_at, rt.started_at = True, None, time.time()
        # Like systemd's Result=, reset for the new run; the last exit code and signal stay (for
        # "exited ... and was restarted"), unlike systemd's ExecMainStatus.
        rt.result = None
        with log.open("ab") as out:
            try:
                child = subprocess.Popen(
                    d.argv,
                    cwd=d.working_dir,
                    env={"PATH": DEFAULT_PATH, **d.env, INVOCATION_ENV: rt.invocation},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                # What systemd reports as 200/CHDIR or 203/EXEC: the unit fails like an exit.
                out.write(f"nodeplane: cannot start {d.argv[0]}: {exc}\n".encode())
                out.flush()  # before the exit line _note_exit appends
                chdir = exc.filename == d.working_dir
                self._note_exit(record, EXIT_CHDIR if chdir else EXIT_EXEC, None)
                return
        self._children[d.name] = child
        stat = procfs.read_stat(child.pid, self.proc_dir)
        rt.pid = child.pid
        rt.start_time = stat.start_time if stat else None
        rt.boot_id = self._this_boot()
        rt.state, rt.sub_state = ActiveState.ACTIVE.value, "running"

    @staticmethod
    def _log_exit(d: Definition, result: str, code: int | None, sig: int | None) -> None:
        """Append the exit line to the unit's log, as systemd's ExecStopPost= does."""
        # A full disk or a removed log directory must not stop supervision.
        with contextlib.suppress(OSError), open(d.log_file, "a") as out:
            out.write(exit_line(result, code, sig) + "\n")

    def _note_exit(self, record: Record, code: int | None, sig: int | None) -> UnitExit:
        """Record an exit the unit did not ask for; schedule a restart if its policy says so.

        The CRASH_LOOP_BURST-th quick exit in a row (each within the unit's stable window of its
        start) gives up instead: `failed`, as systemd's start limit leaves it. Its result stays
        what the exit was (systemd keeps it too), `start-limit-hit` only for a clean exit.
        """
        d, rt = record.definition, record.runtime
        now = time.time()
        result = exit_result(code, sig)
        quick = rt.started_at is None or now - rt.started_at < d.stable_after_s
        rt.quick_failures = rt.quick_failures + 1 if quick else 0
        rt.pid = rt.start_time = rt.invocation = None
        rt.exit_code, rt.exit_signal = code, sig
        rt.exit_reported = False
        self._log_exit(d, result, code, sig)
        restart = rt.wanted and should_restart(d.restart_policy, result)
        if restart and rt.quick_failures >= CRASH_LOOP_BURST:
            restart = False
            if result == "success":
                result = "start-limit-hit"
        rt.result = result
        if restart:
            backoff = d.restart_delay_s * 2 ** min(max(rt.quick_failures - 1, 0), 10)
            rt.restart_at = now + min(backoff, self.max_backoff_s)
            rt.state, rt.sub_state = ActiveState.ACTIVATING.value, "auto-restart"
        else:
            rt.wanted = False
            failed = result != "success"
            rt.state = (ActiveState.FAILED if failed else ActiveState.INACTIVE).value
            rt.sub_state = "failed" if failed else "dead"
        return UnitExit(d.name, result, code, sig, restart)

    def _refresh(self, record: Record) -> bool:
        """Notice an exit (or an unrecorded spawn) since we last looked; True if it changed."""
        rt = record.runtime
        if rt.pid is None:
            return self._adopt_unrecorded(record)
        if self._alive(record.definition.name, rt):
            return False
        code, sig = self._exit_status(record.definition.name, rt)
        if rt.state == ActiveState.DEACTIVATING.value:
            # Gone while being stopped (a stop a killed agent began): a stop, not a crash.
            rt.pid = rt.start_time = rt.invocation = None
            rt.result, rt.exit_code, rt.exit_signal = "success", code, sig
            self._log_exit(record.definition, "success", code, sig)
            rt.state, rt.sub_state = ActiveState.INACTIVE.value, "dead"
            return True
        self._note_exit(record, code, sig)
        return True

    def _adopt_unrecorded(self, record: Record) -> bool:
        """After an agent died between spawning a process and recording it: adopt the process."""
        rt = record.runtime
        if rt.invocation is None:
            return False
        found = procfs.find_session_leader(f"{INVOCATION_ENV}={rt.invocation}", self.proc_dir)
        if found is None:
            rt.invocation = None  # never started (or gone already): the state before stands
            return True
        rt.pid, rt.start_time = found.pid, found.start_time
        rt.boot_id = self._this_boot()
        rt.wanted, rt.restart_at, rt.started_at = True, None, time.time()
        rt.state, rt.sub_state = ActiveState.ACTIVE.value, "running"
        return True

    def _adopt_orphan(self, record: Record) -> bool:
        """Adopt the unit's process if one runs that no record tracks (its state file was lost).

        Ours are session leaders carrying an invocation id in their environment; the unit's is the
        one in the unit's working directory (a node's processes each have their own), preferring
        an exact command line. Never a duplicate: a node's second client process would only fail
        on its data directory's lock, or worse, corrupt it.
        """
        d, rt = record.definition, record.runtime
        candidates = [
            leader
            for leader in procfs.session_leaders_with_env(INVOCATION_ENV, self.proc_dir)
            if leader.cwd == d.working_dir
        ]
        exact = [c for c in candidates if list(c.argv) == d.argv]
        if len(exact) != 1 and len(candidates) != 1:
            return False
        found = exact[0] if len(exact) == 1 else candidates[0]
        rt.pid, rt.start_time = found.stat.pid, found.stat.start_time
        rt.invocation = found.env_value
        rt.boot_id = self._this_boot()
        rt.wanted, rt.restart_at, rt.started_at = True, None, time.time()
        rt.result = rt.exit_code = rt.exit_signal = None
        rt.state, rt.sub_state = ActiveState.ACTIVE.value, "running"
        return True

    def _signal_all(self, name: str, rt: Runtime, leader_start: int, sig: int) -> None:
        """Signal the unit's main process and everything it started.

        While the main process is verifiably ours, its process group is signalled at once; once
        it is gone its pid may be reused, so the leftovers are signalled one by one instead.
        """
        assert rt.pid is not None
        with contextlib.suppress(ProcessLookupError):
            if self._alive(name, rt):
                os.killpg(rt.pid, sig)
                return
        for p in self._leftovers(rt, leader_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)

    def _leftovers(self, rt: Runtime, leader_start: int) -> list[procfs.ProcStat]:
        """Processes still in the unit's session (not started before its main process)."""
        assert rt.pid is not None
        return [
            p for p in procfs.session_members(rt.pid, self.proc_dir) if p.start_time >= leader_start
        ]

    async def _terminate(self, record: Record) -> None:
        """Stop signal to the group, wait up to the stop timeout, then SIGKILL the group."""
        d, rt = record.definition, record.runtime
        assert rt.pid is not None and rt.start_time is not None
        leader_start = rt.start_time
        self._signal_all(d.name, rt, leader_start, signal.Signals[d.stop_signal])
        deadline = time.monotonic() + d.stop_timeout_s
        timed_out = False
        while self._alive(d.name, rt) or self._leftovers(rt, leader_start):
            now = time.monotonic()
            if now >= deadline + KILL_WAIT_S:
                raise DriverError(f"{d.name}: processes survive SIGKILL (uninterruptible I/O?)")
            if now >= deadline and not timed_out:
                timed_out = True
                self._signal_all(d.name, rt, leader_start, signal.SIGKILL)
            await asyncio.sleep(POLL_S)
        code, sig = self._exit_status(d.name, rt)
        if timed_out:
            result = "timeout"
        elif sig is not None and sig == signal.Signals[d.stop_signal]:
            result = "success"  # died of the signal we sent: a clean stop
        else:
            result = exit_result(code, sig) if (code, sig) != (None, None) else "success"
        rt.pid = rt.start_time = rt.invocation = None
        rt.result, rt.exit_code, rt.exit_signal = result, code, sig
        self._log_exit(d, result, code, sig)
        failed = result != "success"
        rt.state = (ActiveState.FAILED if failed else ActiveState.INACTIVE).value
        rt.sub_state = "failed" if failed else "dead"

    # ---- Driver -----------------------------------------------------------------------------

    def definition_text(self, unit: UnitSpec) -> str:
        """The definition `install` records, as `status()` shows it."""
        return definition_text(definition_of(unit))

    async def install(self, unit: UnitSpec) -> bool:
        """Write the definition if it differs; a running process keeps the old one until restart."""
        definition = definition_of(unit)
        async with self._lock(unit.name):
            record = self._load(unit.name)
            if record is not None and record.definition == definition:
                return False
            fresh = record is None
            record = Record(definition, record.runtime if record is not None else Runtime())
            # A unit installed afresh (its state file was lost or unreadable) adopts its process
            # if one still runs: otherwise a node being stopped would leave it running, untracked
            # (start adopts too, but a stopped node is never started).
            if fresh and self._adopt_orphan(record):
                log.warning("supervisor.adopted", unit=unit.name, pid=record.runtime.pid)
            self._save(record)
            return True

    async def start(self, name: str) -> None:
        """Spawn the process unless it already runs (ours or adopted)."""
        async with self._lock(name):
            record = self._load(name)
            if record is None:
                raise UnitNotFound(f"{name} is not installed")
            self._refresh(record)
            rt = record.runtime
            if rt.pid is not None and rt.state == ActiveState.DEACTIVATING.value:
                # Left mid-stop by a killed agent (a restart's stop, say): finish the stop,
                # then start afresh; the process being stopped is not a running one.
                await self._terminate(record)
                self._save(record)
            if rt.pid is None and self._adopt_orphan(record):
                log.warning("supervisor.adopted", unit=name, pid=rt.pid)
            elif rt.pid is None:
                # An explicit start, like systemd's, forgets earlier automatic restarts.
                rt.restarts, rt.quick_failures = 0, 0
                self._spawn(record)
            else:
                # Running already (ours, or adopted).
                rt.wanted = True
                rt.state, rt.sub_state = ActiveState.ACTIVE.value, "running"
            self._save(record)

    async def stop(self, name: str) -> None:
        """Stop gracefully; a no-op for a stopped or unknown unit."""
        async with self._lock(name):
            record = self._load(name)
            if record is None:
                return
            self._refresh(record)
            rt = record.runtime
            # Saved first: an agent killed mid-stop must not restart the unit afterwards.
            rt.wanted, rt.restart_at, rt.exit_reported = False, None, True
            rt.restarts = rt.quick_failures = 0
            if rt.pid is not None:
                rt.state, rt.sub_state = ActiveState.DEACTIVATING.value, "stop-sigterm"
            elif rt.state == ActiveState.ACTIVATING.value:
                # Waiting to be restarted: stays down, failed if its last exit was a failure.
                failed = rt.result not in (None, "success")
                rt.state = (ActiveState.FAILED if failed else ActiveState.INACTIVE).value
                rt.sub_state = "failed" if failed else "dead"
            self._save(record)
            if rt.pid is not None:
                await self._terminate(record)
                self._save(record)

    async def restart(self, name: str) -> None:
        """Stop (if running) then start."""
        if self._load(name) is None:
            raise UnitNotFound(f"{name} is not installed")
        await self.stop(name)
        await self.start(name)

    async def remove(self, name: str) -> None:
        """Stop the unit and delete its state file (its log file stays with the node)."""
        await self.stop(name)
        async with self._lock(name):
            self._path(name).unlink(missing_ok=True)
            self._records.pop(name, None)
            self._children.pop(name, None)

    async def status(self, name: str, *, usage: bool = True) -> UnitStatus:
        """The unit's state now; with `usage`, CPU and memory of its whole session from /proc
        (a scan of every process: reconciling does not need them, reports do)."""
        lock = self._lock(name)
        if lock.locked():
            # A stop may hold the lock for its whole timeout: report what the file says.
            record = self._load(name)
        else:
            async with lock:
                record = self._load(name)
                if record is not None and self._refresh(record):
                    self._save(record)
        if record is None:
            return UnitStatus(exists=False, active_state=ActiveState.INACTIVE)
        rt = record.runtime
        cpu = memory = None
        if rt.pid is not None and usage:
            members = self._session_usage(rt.pid)
            if members:
                cpu = sum(p.cpu_seconds for p in members)
                memory = sum(p.rss_bytes for p in members)
        return UnitStatus(
            exists=True,
            active_state=ActiveState(rt.state),
            sub_state=rt.sub_state,
            main_pid=rt.pid,
            restarts=rt.restarts,
            cpu_seconds=cpu,
            memory_bytes=memory,
            result=rt.result,
            definition=self._definition_text(record),
            stamp=record.definition.stamp,
            exit_code=rt.exit_code,
            exit_signal=rt.exit_signal,
        )

    def _session_usage(self, session: int) -> list[procfs.ProcStat]:
        """The session's live processes for a status report, from a scan at most
        USAGE_SCAN_MAX_AGE_S old; scanned again for a session the last scan did not see (a
        process just spawned). Stopping never uses this: it needs /proc as it is now."""
        now = time.monotonic()
        if now - self._sessions_at > USAGE_SCAN_MAX_AGE_S or session not in self._sessions:
            self._sessions = procfs.sessions(self.proc_dir)
            self._sessions_at = now
        return self._sessions.get(session, [])

    async def list_units(self) -> list[str]:
        """Every unit with a state file."""
        if not self.state_dir.is_dir():
            return []
        names = []
        for path in self.state_dir.iterdir():
            name = path.name.removesuffix(STATE_SUFFIX)
            if path.name.endswith(STATE_SUFFIX) and not path.name.startswith("."):
                with contextlib.suppress(ValueError):
                    names.append(check_unit_name(name))
        return sorted(names)

    async def supervise(self) -> list[UnitExit]:
        """Notice exits, finish stops a killed agent left half done, and restart units whose
        policy says so once their backoff has passed.

        Returns promptly: a half-done stop is finished by a background task of its unit (it may
        wait out the unit's stop timeout, ten minutes for litecoind), never here, so one slow
        stop never holds up another unit's crash restart. One unit's trouble (a state file that
        cannot be written, a log directory gone read-only) is logged and kept for
        `drain_problems`; every other unit is still supervised.
        """
        exits: list[UnitExit] = []
        for name in await self.list_units():
            try:
                await self._supervise_unit(name, exits)
            except Exception as exc:
                log.error("supervisor.unit_failed", unit=name, error=str(exc))
                self._problems.append(
                    DriverProblem(unit=name, message=f"{name}: supervising failed: {exc}")
                )
        return exits

    def _finish_stop_in_background(self, name: str) -> None:
        """Start the task that finishes the unit's half-done stop, unless one runs already."""
        if name in self._finishing:
            return
        log.info("supervisor.finishing_stop", unit=name)
        self._finishing[name] = asyncio.create_task(
            self._finish_stop(name), name=f"finish-stop:{name}"
        )

    async def _finish_stop(self, name: str) -> None:
        """Finish a stop a killed agent began (the lock is the unit's until it is done)."""
        try:
            async with self._lock(name):
                record = self._load(name)
                if record is None:
                    return
                changed = self._refresh(record)
                rt = record.runtime
                # A start or stop that took the lock first may have finished it already.
                if rt.pid is not None and rt.state == ActiveState.DEACTIVATING.value:
                    await self._terminate(record)
                    changed = True
                if changed:
                    self._save(record)
        except Exception as exc:
            log.error("supervisor.finish_stop_failed", unit=name, error=str(exc))
            self._problems.append(
                DriverProblem(unit=name, message=f"{name}: finishing its stop failed: {exc}")
            )
        finally:
            self._finishing.pop(name, None)

    async def _supervise_unit(self, name: str, exits: list[UnitExit]) -> None:
        lock = self._lock(name)
        if lock.locked() or name in self._finishing:
            return  # being stopped or started right now; look again next tick
        async with lock:
            record = self._load(name)
            if record is None:
                return
            changed = self._refresh(record)
            rt = record.runtime
            if rt.pid is not None and rt.state == ActiveState.DEACTIVATING.value:
                # Nobody here is stopping it (the lock was free): an agent killed mid-stop
                # left it. Finish the stop, as systemd finishes a stop job on its own.
                self._finish_stop_in_background(name)
                if changed:
                    self._save(record)
                return
            if not rt.exit_reported:
                rt.exit_reported, changed = True, True
                exits.append(
                    UnitExit(
                        name,
                        rt.result or "unknown",
                        rt.exit_code,
                        rt.exit_signal,
                        will_restart=rt.restart_at is not None,
                    )
                )
            if rt.restart_at is not None and rt.wanted and time.time() >= rt.restart_at:
                rt.restarts += 1
                self._spawn(record)
                changed = True
            if changed:
                self._save(record)
