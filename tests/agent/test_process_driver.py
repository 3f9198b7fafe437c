"""What only the built-in supervisor does: adoption after an agent restart, pid identity, backoff."""

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from nodeplane.executor.agent import procfs, statefile
from nodeplane.executor.agent.driver import ActiveState, UnitExit
from nodeplane.executor.agent.process_driver import (
    INVOCATION_ENV,
    ProcessDriver,
    Record,
    should_restart,
)
from nodeplane.protocol import RestartPolicy
from tests.agent.harness import (
    PYTHON,
    SLEEP_FOREVER,
    DriverHarness,
    new_marker,
    processes_with,
    read,
    running,
    wait_for_processes,
    wait_until,
)

# Every scenario runs real child processes under the process driver.
pytestmark = [pytest.mark.anyio, pytest.mark.process]


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[DriverHarness]:
    """A process driver with its state under the test's tmp dir."""
    h = DriverHarness(
        kind="process", driver=ProcessDriver(tmp_path / "supervisor"), workdir=tmp_path
    )
    yield h
    h.cleanup()


Sleeper = tuple[subprocess.Popen[bytes], str]


def sleeper(env: dict[str, str] | None = None) -> Iterator[Sleeper]:
    """A process the driver did not start (in a session of its own), and its marker."""
    marker = new_marker()
    process = subprocess.Popen(
        [PYTHON, "-c", SLEEP_FOREVER, marker], start_new_session=True, env=env
    )
    yield process, marker
    process.kill()
    process.wait()


@pytest.fixture
def stranger() -> Iterator[Sleeper]:
    """Somebody else's process."""
    yield from sleeper()


INVOCATION = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def unrecorded() -> Iterator[Sleeper]:
    """A process spawned for an invocation that the agent was killed before recording."""
    yield from sleeper({**os.environ, INVOCATION_ENV: INVOCATION})


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def state_dir(h: DriverHarness) -> Path:
    assert isinstance(h.driver, ProcessDriver)
    return h.driver.state_dir


@pytest.mark.parametrize(
    ("policy", "result", "restart"),
    [
        ("always", "success", True),
        ("always", "signal", True),
        ("on-failure", "success", False),
        ("on-failure", "exit-code", True),
        ("on-failure", "signal", True),
        ("on-failure", "unknown", True),
        ("on-failure", "timeout", True),
        ("no", "signal", False),
        ("no", "success", False),
    ],
)
def test_restart_policy_table(policy: str, result: str, restart: bool) -> None:
    assert should_restart(policy, result) is restart


async def test_state_file_records_definition_and_identity(pd: DriverHarness) -> None:
    unit = pd.unit()
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    pid = (await pd.wait(unit.name, running)).main_pid
    record = json.loads((state_dir(pd) / f"{unit.name}.json").read_text())
    assert record["definition"]["argv"] == list(unit.process.argv)
    assert record["runtime"]["pid"] == pid
    assert pid is not None
    assert record["runtime"]["start_time"] == start_time(pid)


async def test_a_restarted_agent_adopts_running_processes(pd: DriverHarness) -> None:
    """A second driver on the same state dir (the agent restarted) never starts a duplicate."""
    unit = pd.unit()
    marker = unit.process.argv[-1]
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    pid = (await pd.wait(unit.name, running)).main_pid

    again = DriverHarness(kind="process", driver=ProcessDriver(state_dir(pd)), workdir=pd.workdir)
    assert await again.driver.list_units() == [unit.name]
    assert await again.driver.install(unit) is False
    status = await again.driver.status(unit.name)
    assert status.active_state is ActiveState.ACTIVE and status.main_pid == pid
    await again.driver.start(unit.name)
    assert await again.driver.supervise() == []
    assert processes_with(marker) == [pid]

    await again.driver.stop(unit.name)
    assert processes_with(marker) == []
    assert (await again.driver.status(unit.name)).active_state is ActiveState.INACTIVE
    await again.driver.start(unit.name)
    await wait_for_processes(marker, 1)
    await again.driver.remove(unit.name)
    assert processes_with(marker) == []


@pytest.mark.parametrize(
    ("policy", "final"),
    [(RestartPolicy.ON_FAILURE, ActiveState.ACTIVE), (RestartPolicy.NO, ActiveState.FAILED)],
)
async def test_an_adopted_process_that_vanishes_is_a_failure(
    pd: DriverHarness, policy: RestartPolicy, final: ActiveState
) -> None:
    """Its exit status is lost to a driver that is not its parent: it counts as a crash."""
    unit = pd.unit(policy)
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    pid = (await pd.wait(unit.name, running)).main_pid
    assert pid is not None
    again = ProcessDriver(state_dir(pd))
    os.kill(pid, signal.SIGKILL)
    exits: list[UnitExit] = []
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        exits = await again.supervise()
    assert exits == [
        UnitExit(unit.name, "unknown", None, None, will_restart=final is ActiveState.ACTIVE)
    ]
    pd.driver = again
    status = await pd.wait(unit.name, lambda s: s.active_state is final)
    if final is ActiveState.ACTIVE:
        assert status.restarts == 1 and status.main_pid not in (None, pid)
    else:
        assert status.result == "unknown" and status.main_pid is None


async def test_supervise_reports_exit_status_of_its_children(pd: DriverHarness) -> None:
    unit = pd.unit(RestartPolicy.ON_FAILURE)
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    pid = (await pd.wait(unit.name, running)).main_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    exits: list[UnitExit] = []
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        exits = await pd.driver.supervise()
    assert exits == [UnitExit(unit.name, "signal", None, signal.SIGKILL, will_restart=True)]
    assert (await pd.wait(unit.name, running)).restarts == 1


async def test_a_spawn_the_agent_did_not_record_is_adopted(
    pd: DriverHarness, unrecorded: Sleeper
) -> None:
    """Killed between spawning and saving the pid, the agent finds the process by invocation."""
    process, marker = unrecorded
    unit = pd.unit()
    await pd.driver.install(unit)
    path = state_dir(pd) / f"{unit.name}.json"
    record = Record.from_json(path.read_text())
    record.runtime = replace(record.runtime, invocation=INVOCATION)  # saved just before spawning
    path.write_text(record.to_json())
    status = await pd.driver.status(unit.name)
    assert status.active_state is ActiveState.ACTIVE and status.main_pid == process.pid
    await pd.driver.start(unit.name)
    assert processes_with(marker) == [process.pid]
    await pd.driver.stop(unit.name)
    assert process.wait(timeout=5) == -signal.SIGTERM
    assert (await pd.driver.status(unit.name)).active_state is ActiveState.INACTIVE


async def test_an_interrupted_spawn_that_never_ran_is_forgotten(pd: DriverHarness) -> None:
    unit = pd.unit()
    await pd.driver.install(unit)
    path = state_dir(pd) / f"{unit.name}.json"
    record = Record.from_json(path.read_text())
    record.runtime = replace(record.runtime, invocation=INVOCATION)
    path.write_text(record.to_json())
    status = await pd.driver.status(unit.name)
    assert status.active_state is ActiveState.INACTIVE and status.main_pid is None
    assert Record.from_json(path.read_text()).runtime.invocation is None


async def test_status_of_many_units_reads_proc_once(
    pd: DriverHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status per unit per reconcile used to scan all of /proc each time (nodes x processes
    stat reads: most of an agent's CPU with 50 nodes); one scan serves a burst of them. A
    process spawned after the scan is still seen at once."""
    units = [pd.unit() for _ in range(3)]
    for unit in units:
        await pd.driver.install(unit)
        await pd.driver.start(unit.name)
    for unit in units:
        await pd.wait(unit.name, running)
    reads = 0
    read_stat = procfs.read_stat

    def counted(pid: int, proc: Path = procfs.PROC) -> procfs.ProcStat | None:
        nonlocal reads
        reads += 1
        return read_stat(pid, proc)

    monkeypatch.setattr(procfs, "read_stat", counted)
    processes = sum(1 for e in os.listdir("/proc") if e.isdigit())
    statuses = [await pd.driver.status(u.name) for u in units for _ in range(3)]
    assert all(s.memory_bytes and s.cpu_seconds is not None for s in statuses)
    assert reads < 2 * processes, (reads, processes)

    late = pd.unit()
    await pd.driver.install(late)
    await pd.driver.start(late.name)
    status = await pd.driver.status(late.name)
    assert running(status) and status.memory_bytes, status


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Count the calls of `owner.name` from now on: the returned list holds the count."""
    count = [0]
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return count


async def test_unchanged_state_files_are_not_read_again(
    pd: DriverHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Supervision, reconciles and reports ask for every unit's record every few seconds; they
    read a state file again only when it changed. A change made behind the driver's back (an
    operator's edit, a file rewritten in place with the same size) is still seen at once."""
    monkeypatch.setattr(statefile, "RACY_WINDOW_NS", 0)
    units = [pd.unit() for _ in range(3)]
    for unit in units:
        await pd.driver.install(unit)
        await pd.driver.start(unit.name)
    for unit in units:
        await pd.wait(unit.name, running)
    parses = count_calls(monkeypatch, Record, "from_json")
    for _ in range(3):
        await pd.driver.supervise()
        for unit in units:
            await pd.driver.status(unit.name)
            await pd.driver.status(unit.name, usage=False)
    assert parses == [0]

    path = state_dir(pd) / f"{units[0].name}.json"
    text = path.read_text()
    assert '"restarts": 0,' in text
    path.write_text(text.replace('"restarts": 0,', '"restarts": 7,'))  # in place, same size
    assert (await pd.driver.status(units[0].name)).restarts == 7
    assert parses == [1]
    assert (await pd.driver.status(units[0].name)).restarts == 7
    assert parses == [1]

    kept = path.read_text()
    path.unlink()
    assert not (await pd.driver.status(units[0].name)).exists
    # Back, so that the cleanup stops its process (else left running after the suite).
    path.write_text(kept)


async def test_a_state_file_changed_just_now_is_read_on_every_look(
    pd: DriverHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write in the same timestamp tick as the last read leaves size and times alike: until
    the file is older than the racy window, its times cannot vouch for it, so it is read."""
    unit = pd.unit()
    await pd.driver.install(unit)
    parses = count_calls(monkeypatch, Record, "from_json")
    for _ in range(3):
        assert (await pd.driver.status(unit.name)).exists
    assert parses == [3]


async def test_reconciling_does_not_scan_proc(
    pd: DriverHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU and memory (a scan of every process) only for the callers that report them."""
    units = [pd.unit() for _ in range(3)]
    for unit in units:
        await pd.driver.install(unit)
        await pd.driver.start(unit.name)
    for unit in units:
        await pd.wait(unit.name, running)
    scans = count_calls(monkeypatch, procfs, "sessions")
    for unit in units:
        status = await pd.driver.status(unit.name, usage=False)
        assert running(status) and status.cpu_seconds is None and status.memory_bytes is None
    await pd.driver.supervise()
    assert scans == [0]
    status = await pd.driver.status(units[0].name)
    assert status.cpu_seconds is not None and status.memory_bytes


async def test_a_reused_pid_is_never_taken_for_ours(pd: DriverHarness, stranger: Sleeper) -> None:
    """A state file naming a live pid with another start time: not ours, never signalled."""
    process, marker = stranger
    unit = pd.unit(RestartPolicy.NO)
    await pd.driver.install(unit)
    path = state_dir(pd) / f"{unit.name}.json"
    record = Record.from_json(path.read_text())
    record.runtime = replace(
        record.runtime, wanted=True, state="active", pid=process.pid, start_time=1
    )
    path.write_text(record.to_json())
    status = await pd.driver.status(unit.name)
    assert status.active_state is ActiveState.FAILED and status.main_pid is None
    await pd.driver.stop(unit.name)
    await pd.driver.start(unit.name)
    await pd.wait(unit.name, running)
    await pd.driver.remove(unit.name)
    assert process.poll() is None
    assert processes_with(marker) == [process.pid]


async def test_missing_executable_fails_the_unit(pd: DriverHarness) -> None:
    log = pd.workdir / "missing.log"
    unit = pd.unit(RestartPolicy.NO, argv=("/nonexistent/bin/client", "-x"), log_file=log)
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    status = await pd.driver.status(unit.name)
    assert status.active_state is ActiveState.FAILED and status.result == "exit-code"
    assert "cannot start /nonexistent/bin/client" in read(log)
    assert await pd.driver.supervise() == [
        UnitExit(unit.name, "exit-code", 203, None, will_restart=False)
    ]


async def test_default_log_file_is_next_to_the_working_directory(pd: DriverHarness) -> None:
    unit = pd.unit()
    unit = replace(unit, log_file=None)
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    await pd.wait(unit.name, running)
    log = unit.process.working_dir.parent / "logs" / "node.log"
    await wait_until(lambda: read(log).startswith("up "))


async def test_crash_loop_backs_off(pd: DriverHarness) -> None:
    """Restarts of a process that keeps failing at once are spaced out, doubling each time."""
    assert isinstance(pd.driver, ProcessDriver)
    pd.driver.max_backoff_s = 1.0
    unit = pd.unit(
        RestartPolicy.ALWAYS, argv=(PYTHON, "-c", "raise SystemExit(1)"), restart_delay_s=0.1
    )
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        await pd.driver.supervise()
        await asyncio.sleep(0.02)
    # Delays 0.1, 0.2, 0.4, 0.8, 1.0 (capped): about five restarts in 2.5 s, not twenty.
    restarts = (await pd.driver.status(unit.name)).restarts
    assert 3 <= restarts <= 6
    await pd.driver.stop(unit.name)
    status = await pd.driver.status(unit.name)
    assert status.active_state is ActiveState.FAILED and status.restarts == 0
