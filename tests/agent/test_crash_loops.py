"""Crash loops and exit statuses, the same on real systemd (in a sandbox) and the process driver.

A process that keeps failing soon after it starts is given up (`failed`) after CRASH_LOOP_BURST
quick exits, until an explicit start; every exit is written to the unit's log as an exit line, so
the agent can say "exited (killed by SIGKILL)" after systemd has forgotten it.
"""

from dataclasses import replace

import pytest

from nodeplane.executor.agent.driver import CRASH_LOOP_BURST, ActiveState
from nodeplane.executor.agent.exits import last_run, read_tail
from nodeplane.executor.agent.process_driver import ProcessDriver
from tests.agent.harness import PYTHON, DriverHarness, new_marker, read, running

pytestmark = pytest.mark.anyio

FAIL_AT_ONCE = "import sys; print('fatal: no good', sys.argv[1], flush=True); sys.exit(3)"
FAIL_AFTER = "import sys, time; time.sleep(float(sys.argv[1])); sys.exit(4)"
KILL_LINE = "nodeplane: exit result=signal code=killed status=KILL"


def exit_lines(log: str, code: int) -> int:
    return log.count(f"nodeplane: exit result=exit-code code=exited status={code}")


async def test_a_crash_loop_is_given_up_until_started_again(harness: DriverHarness) -> None:
    unit = harness.unit(argv=(PYTHON, "-c", FAIL_AT_ONCE, new_marker()), restart_delay_s=0.1)
    assert unit.log_file is not None
    await harness.driver.install(unit)
    await harness.driver.start(unit.name)

    status = await harness.wait(
        unit.name, lambda s: s.active_state is ActiveState.FAILED, within=30
    )
    assert status.exit_code == 3 and status.exit_signal is None and status.result == "exit-code"
    assert status.restarts >= CRASH_LOOP_BURST - 1 and not status.main_pid
    # One exit line per run, written by the driver (systemd: ExecStopPost=), and no more runs.
    log = read(unit.log_file)
    assert exit_lines(log, 3) == CRASH_LOOP_BURST
    assert log.count("fatal: no good") == CRASH_LOOP_BURST
    for _ in range(5):
        await harness.driver.supervise()
    assert (await harness.driver.status(unit.name)).active_state is ActiveState.FAILED
    run = last_run(read_tail(unit.log_file))
    assert run.exit is not None and run.exit.exit_code == 3
    assert [line.split()[:2] for line in run.output] == [["fatal:", "no"]]

    # An explicit start is a new ask (systemd would refuse it: start-limit-hit, without
    # reset-failed); the loop runs its course again.
    log_file = unit.log_file
    await harness.driver.start(unit.name)
    await harness.wait(
        unit.name,
        lambda s: (
            s.active_state is ActiveState.FAILED
            and exit_lines(read(log_file), 3) >= 2 * CRASH_LOOP_BURST
        ),
        within=30,
    )
    assert exit_lines(read(log_file), 3) == 2 * CRASH_LOOP_BURST


async def test_exits_after_the_stable_window_are_not_a_crash_loop(harness: DriverHarness) -> None:
    unit = harness.unit(argv=(PYTHON, "-c", FAIL_AFTER, "1.0", new_marker()), restart_delay_s=0.1)
    unit = replace(unit, stable_after_s=0.3)
    await harness.driver.install(unit)
    await harness.driver.start(unit.name)
    status = await harness.wait(unit.name, lambda s: s.restarts >= CRASH_LOOP_BURST + 1, within=30)
    assert status.active_state is not ActiveState.FAILED
    await harness.driver.stop(unit.name)


async def test_a_killed_process_is_named_by_its_signal_after_the_restart(
    harness: DriverHarness,
) -> None:
    unit = harness.unit()
    assert unit.log_file is not None
    await harness.driver.install(unit)
    await harness.driver.start(unit.name)
    pid = (await harness.wait(unit.name, running)).main_pid
    assert pid is not None
    harness.kill(pid)
    status = await harness.wait(
        unit.name, lambda s: running(s) and s.restarts == 1 and s.main_pid != pid
    )
    if isinstance(harness.driver, ProcessDriver):
        # The parent saw the signal; a restart does not make it forget.
        assert status.exit_signal == 9 and status.exit_code is None
    # Both drivers wrote it to the log, where it outlives systemd's memory of it.
    run = last_run(read_tail(unit.log_file))
    assert run.exit is not None and run.exit.exit_signal == 9
    assert KILL_LINE in read(unit.log_file)
    await harness.driver.stop(unit.name)
    assert read(unit.log_file).splitlines()[-1].startswith("nodeplane: exit result=success")
