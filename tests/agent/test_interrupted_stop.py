"""An agent killed in the middle of a stop, on the process driver.

`stop()` saves the unit as deactivating before it signals the process, so that a killed agent
never restarts it afterwards. If the agent dies between the two, the process still runs and the
state file says "deactivating". systemd finishes a stop job on its own; the supervisor has to
finish it for the next agent, or a stopped node keeps running and a restart is silently lost
(seen end to end in tests/e2e/test_resilience_e2e.py).
"""

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.executor.agent.driver import ActiveState, UnitSpec
from nodeplane.executor.agent.process_driver import ProcessDriver
from tests.agent.harness import (
    PYTHON,
    DriverHarness,
    new_marker,
    processes_with,
    running,
    wait_until,
)

# Every scenario runs real child processes under the process driver.
pytestmark = [pytest.mark.anyio, pytest.mark.process]


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[DriverHarness]:
    h = DriverHarness(
        kind="process", driver=ProcessDriver(tmp_path / "supervisor"), workdir=tmp_path
    )
    yield h
    h.cleanup()


async def interrupted_stop(
    pd: DriverHarness, unit: UnitSpec | None = None
) -> tuple[UnitSpec, int, ProcessDriver]:
    """A running unit left exactly as an agent killed inside `stop()` leaves it; a new driver."""
    assert isinstance(pd.driver, ProcessDriver)
    unit = unit or pd.unit()
    await pd.driver.install(unit)
    await pd.driver.start(unit.name)
    pid = (await pd.wait(unit.name, running)).main_pid
    assert pid is not None
    path = pd.driver.state_dir / f"{unit.name}.json"
    record = json.loads(path.read_text())
    record["runtime"].update(wanted=False, state="deactivating", sub_state="stop-sigterm")
    path.write_text(json.dumps(record))
    return unit, pid, ProcessDriver(pd.driver.state_dir)


async def test_the_next_agent_finishes_an_interrupted_stop(pd: DriverHarness) -> None:
    unit, pid, again = await interrupted_stop(pd)
    marker = unit.process.argv[-1]
    assert processes_with(marker) == [pid]

    pd.driver = again
    await again.supervise()  # every reconcile tick starts with this
    await wait_until(lambda: processes_with(marker) == [])  # finished in the background
    status = await pd.wait(unit.name, lambda s: s.active_state is ActiveState.INACTIVE)
    assert status.main_pid is None
    await again.supervise()
    assert processes_with(marker) == [], "a stopped unit must not be restarted"


async def test_start_after_an_interrupted_stop_runs_a_new_process(pd: DriverHarness) -> None:
    """A restart interrupted between its stop and its start: the start finishes the stop first,
    instead of taking the process that was being stopped for a running one."""
    unit, pid, again = await interrupted_stop(pd)
    marker = unit.process.argv[-1]

    await again.start(unit.name)
    status = await again.status(unit.name)
    assert status.active_state is ActiveState.ACTIVE
    assert status.main_pid is not None and status.main_pid != pid
    assert processes_with(marker) == [status.main_pid]
    await again.remove(unit.name)
    assert processes_with(marker) == []


async def test_a_process_gone_during_an_interrupted_stop_was_stopped_not_crashed(
    pd: DriverHarness,
) -> None:
    """The killed agent's stop signal did arrive: the unit is stopped cleanly, not failed (no
    crash to report, nothing for a restart policy to do)."""
    unit, pid, again = await interrupted_stop(pd)
    marker = unit.process.argv[-1]
    pd.kill(pid, signal.SIGTERM)
    await wait_until(lambda: processes_with(marker) == [])
    # An exiting process's argv is gone from /proc a moment before its state is: the driver may
    # still see it running (stopping) then, and notices the exit at its next look.
    status = await again.status(unit.name)
    for _ in range(200):
        if status.active_state is not ActiveState.DEACTIVATING:
            break
        await asyncio.sleep(0.05)
        status = await again.status(unit.name)

    assert status.active_state is ActiveState.INACTIVE and status.result == "success"
    assert await again.supervise() == []
    assert processes_with(marker) == []


# Ignores SIGTERM (counting each one in its log), as a client busy flushing or a frozen one does.
STUBBORN = (
    "import signal, sys; "
    "signal.signal(signal.SIGTERM, lambda *_: print('SIGTERM', flush=True)); "
    "print('up', sys.argv[1], flush=True); "
    "[signal.pause() for _ in iter(int, 1)]"
)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has installed its SIGTERM handler (before that, SIGTERM ends it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


async def test_a_slow_interrupted_stop_never_holds_up_another_units_restart(
    pd: DriverHarness,
) -> None:
    """The half-done stop waits out its unit's stop timeout (litecoind's is ten minutes) in a
    task of its own; supervise() returns at once and restarts another unit's killed process."""
    marker = new_marker()
    slow = pd.unit(argv=(PYTHON, "-c", STUBBORN, marker), marker=marker, stop_timeout_s=600)
    slow, slow_pid, again = await interrupted_stop(pd, slow)
    # Running is not yet ignoring SIGTERM: on a busy machine the interpreter may still be
    # starting when the stop is finished, and the default action would end it.
    await wait_until(lambda: _catches_sigterm(slow_pid))
    pd.driver = again
    try:
        other = pd.unit()
        await again.install(other)
        await again.start(other.name)
        other_pid = (await again.status(other.name)).main_pid
        assert other_pid is not None
        pd.kill(other_pid, signal.SIGKILL)
        await wait_until(lambda: processes_with(other.process.argv[-1]) == [])

        for _ in range(3):
            # Promptly, every time: the stop goes on behind it.
            await asyncio.wait_for(again.supervise(), timeout=5)
        status = await pd.wait(other.name, lambda s: running(s) and s.main_pid != other_pid)
        assert status.restarts == 1
        assert processes_with(marker) == [slow_pid], "the stop goes on: SIGTERM is ignored"
        assert (await again.status(slow.name)).active_state is ActiveState.DEACTIVATING
        log_file = slow.log_file
        assert log_file is not None
        await wait_until(lambda: "SIGTERM" in log_file.read_text())
        for _ in range(3):
            await again.supervise()
        await asyncio.sleep(0.3)
        assert log_file.read_text().count("SIGTERM") == 1, "one stop per unit, never two"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(slow_pid, signal.SIGKILL)  # a failed test must not wait out 600 s

    # Once the process goes, the stop is done: stopped, never restarted.
    await wait_until(lambda: processes_with(marker) == [])
    status = await pd.wait(slow.name, lambda s: s.active_state is ActiveState.INACTIVE)
    assert status.main_pid is None
    await again.supervise()
    assert processes_with(marker) == []
