"""An agent killed in the middle of a stop, on the process driver.

`stop()` saves the unit as deactivating before it signals the process, so that a killed agent
never restarts it afterwards. If the agent dies between the two, the process still runs and the
state file says "deactivating". systemd finishes a stop job on its own; the supervisor has to
finish it for the next agent, or a stopped node keeps running and a restart is silently lost
(seen end to end in tests/e2e/test_resilience_e2e.py).
"""

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.executor.agent.driver import ActiveState, UnitSpec
from nodeplane.executor.agent.process_driver import ProcessDriver
from tests.agent.harness import DriverHarness, processes_with, running, wait_until

# Every scenario runs real child processes under the process driver.
pytestmark = [pytest.mark.anyio, pytest.mark.process]


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[DriverHarness]:
    h = DriverHarness(
        kind="process", driver=ProcessDriver(tmp_path / "supervisor"), workdir=tmp_path
    )
    yield h
    h.cleanup()


async def interrupted_stop(pd: DriverHarness) -> tuple[UnitSpec, int, ProcessDriver]:
    """A running unit left exactly as an agent killed inside `stop()` leaves it; a new driver."""
    assert isinstance(pd.driver, ProcessDriver)
    unit = pd.unit()
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

    await again.supervise()  # every reconcile tick starts with this
    assert processes_with(marker) == []
    status = await again.status(unit.name)
    assert status.active_state is ActiveState.INACTIVE and status.main_pid is None
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

    status = await again.status(unit.name)
    assert status.active_state is ActiveState.INACTIVE and status.result == "success"
    assert await again.supervise() == []
    assert processes_with(marker) == []
