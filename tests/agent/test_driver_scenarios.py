"""The same scenarios against real systemd (in a sandbox) and against the process driver."""

import json
import time
from dataclasses import replace
from functools import partial

import pytest

from nodeplane.executor.agent.driver import ActiveState, UnitNotFound
from nodeplane.protocol import RestartPolicy
from tests.agent.harness import (
    HOSTILE_WORDS,
    PRINT_ARGS,
    PYTHON,
    DriverHarness,
    lines_in,
    new_marker,
    processes_with,
    read,
    running,
    wait_for_processes,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_lifecycle(harness: DriverHarness) -> None:
    """install, start, start again, stop, start, restart, remove; each idempotent."""
    d = harness.driver
    unit = harness.unit()
    marker = unit.process.argv[-1]

    assert await d.install(unit) is True
    assert await d.install(unit) is False
    status = await d.status(unit.name)
    assert status.exists and status.active_state is ActiveState.INACTIVE and not status.main_pid
    assert unit.name in await d.list_units()

    await d.start(unit.name)
    first = (await harness.wait(unit.name, running)).main_pid
    await wait_for_processes(marker, 1)
    await d.start(unit.name)  # running already: nothing happens
    assert (await d.status(unit.name)).main_pid == first
    assert len(processes_with(marker)) == 1

    await d.stop(unit.name)
    status = await d.status(unit.name)
    assert status.active_state is ActiveState.INACTIVE and not status.main_pid
    assert status.result == "success"
    assert processes_with(marker) == []
    await d.stop(unit.name)  # stopped already: nothing happens

    await d.start(unit.name)
    second = (await harness.wait(unit.name, running)).main_pid
    assert second != first
    await d.restart(unit.name)
    third = (await harness.wait(unit.name, running)).main_pid
    assert third not in (first, second)
    await wait_for_processes(marker, 1)

    await d.remove(unit.name)
    assert not harness.definition_file(unit.name).exists()
    assert processes_with(marker) == []
    assert unit.name not in await d.list_units()
    assert not (await d.status(unit.name)).exists
    await d.remove(unit.name)  # gone already: nothing happens
    with pytest.raises(UnitNotFound):
        await d.start(unit.name)


async def test_install_reports_changes(harness: DriverHarness) -> None:
    d = harness.driver
    unit = harness.unit()
    assert await d.install(unit) is True
    before = (await d.status(unit.name)).definition
    changed = replace(unit, process=replace(unit.process, argv=(*unit.process.argv, "more")))
    assert await d.install(changed) is True
    assert await d.install(changed) is False
    assert (await d.status(unit.name)).definition != before


async def test_sigkill_with_restart_on_failure_comes_back(harness: DriverHarness) -> None:
    d = harness.driver
    unit = harness.unit(RestartPolicy.ON_FAILURE)
    await d.install(unit)
    await d.start(unit.name)
    pid = (await harness.wait(unit.name, running)).main_pid
    assert pid is not None
    harness.kill(pid)
    status = await harness.wait(
        unit.name, lambda s: running(s) and s.main_pid != pid and s.restarts >= 1
    )
    assert status.restarts >= 1
    await wait_for_processes(unit.process.argv[-1], 1)


async def test_sigkill_with_restart_no_ends_failed(harness: DriverHarness) -> None:
    d = harness.driver
    unit = harness.unit(RestartPolicy.NO)
    await d.install(unit)
    await d.start(unit.name)
    pid = (await harness.wait(unit.name, running)).main_pid
    assert pid is not None
    harness.kill(pid)
    status = await harness.wait(unit.name, lambda s: s.active_state is ActiveState.FAILED)
    assert status.result == "signal" and status.restarts == 0 and not status.main_pid
    assert processes_with(unit.process.argv[-1]) == []
    # An explicit start brings a failed unit back.
    await d.start(unit.name)
    await harness.wait(unit.name, running)


@pytest.mark.parametrize(
    ("policy", "exit_code", "restarts", "final"),
    [
        (RestartPolicy.ALWAYS, 0, True, None),
        (RestartPolicy.ON_FAILURE, 3, True, None),
        (RestartPolicy.ON_FAILURE, 0, False, (ActiveState.INACTIVE, "success")),
        (RestartPolicy.NO, 3, False, (ActiveState.FAILED, "exit-code")),
    ],
)
async def test_exit_per_restart_policy(
    harness: DriverHarness,
    policy: RestartPolicy,
    exit_code: int,
    restarts: bool,
    final: tuple[ActiveState, str] | None,
) -> None:
    marker = new_marker()
    argv = (PYTHON, "-c", "import sys; sys.exit(int(sys.argv[1]))", str(exit_code), marker)
    unit = harness.unit(policy, argv=argv, restart_delay_s=0.5)
    await harness.driver.install(unit)
    await harness.driver.start(unit.name)
    if restarts:
        await harness.wait(unit.name, lambda s: s.restarts >= 1)
    else:
        assert final is not None
        status = await harness.wait(unit.name, lambda s: s.active_state is final[0])
        assert status.result == final[1] and status.restarts == 0
    await harness.driver.stop(unit.name)


async def test_stop_signal_and_log_file(harness: DriverHarness) -> None:
    """The unit's own stop signal is sent; stdout and stderr are appended to its log file."""
    program = (
        "import signal, sys\n"
        "def bye(sig, frame):\n"
        "    print('bye', signal.Signals(sig).name, flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, bye)\n"
        "print('up', flush=True); print('to stderr', file=sys.stderr, flush=True)\n"
        "signal.pause()\n"
    )
    script = harness.workdir / "bye.py"
    script.write_text(program)
    log = harness.workdir / "logs" / "node.log"
    unit = harness.unit(argv=(PYTHON, str(script), new_marker()), stop_signal="INT", log_file=log)
    await harness.driver.install(unit)
    for run in (1, 2):
        await harness.driver.start(unit.name)
        await harness.wait(unit.name, running)
        await wait_until(partial(lines_in, log, "to stderr", run))
        await harness.driver.stop(unit.name)
        status = await harness.driver.status(unit.name)
        assert status.active_state is ActiveState.INACTIVE and status.result == "success"
    # Appended, never truncated: both runs are there.
    assert read(log).splitlines().count("bye SIGINT") == 2


async def test_stop_timeout_kills_the_whole_group(harness: DriverHarness) -> None:
    """A process that ignores its stop signal, and its child, are SIGKILLed after the timeout."""
    marker = new_marker()
    program = (
        "import signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()', sys.argv[1]]); "
        "signal.pause()"
    )
    unit = harness.unit(argv=(PYTHON, "-c", program, marker), stop_timeout_s=1)
    await harness.driver.install(unit)
    await harness.driver.start(unit.name)
    await harness.wait(unit.name, running)
    await wait_for_processes(marker, 2)
    began = time.monotonic()
    await harness.driver.stop(unit.name)
    assert 0.9 <= time.monotonic() - began < 8
    assert processes_with(marker) == []
    status = await harness.driver.status(unit.name)
    assert status.active_state is ActiveState.FAILED and status.result == "timeout"


async def test_argv_env_and_paths_round_trip(harness: DriverHarness) -> None:
    """Hostile words reach the process exactly as given: argv, environment, working directory."""
    work = harness.workdir / "w o\"r%k$d 'ü' \\x"
    log = harness.workdir / 'l o"g %h $x.log'
    env = {"NP_A": "$HOME", "NP_B": 'x\\y"z', "NP_C": "100%", "NP_D": "${X} $(id) `id`"}
    unit = harness.unit(
        RestartPolicy.NO,
        argv=(PYTHON, "-c", PRINT_ARGS, *HOSTILE_WORDS),
        env=env,
        working_dir=work,
        log_file=log,
    )
    await harness.driver.install(unit)
    if harness.sandbox is not None:
        verified = harness.sandbox.exec(
            "systemd-analyze", "verify", f"/run/systemd/system/{unit.name}", check=False
        )
        assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    await harness.driver.start(unit.name)
    status = await harness.wait(unit.name, lambda s: s.active_state is ActiveState.INACTIVE)
    assert status.result == "success", read(log)
    *output, exit_line = read(log).splitlines()
    # Each driver ends a run's output with its exit line (systemd: ExecStopPost=).
    assert exit_line == "nodeplane: exit result=success code=exited status=0"
    seen = json.loads(output[-1])
    assert seen == {"argv": HOSTILE_WORDS, "cwd": str(work), "env": env}


async def test_cpu_and_memory_accounting(harness: DriverHarness) -> None:
    program = "import signal; sum(range(3 * 10**6)); print('up', flush=True); signal.pause()"
    unit = harness.unit(argv=(PYTHON, "-c", program, new_marker()))
    await harness.driver.install(unit)
    await harness.driver.start(unit.name)
    status = await harness.wait(
        unit.name,
        lambda s: (
            running(s) and (s.cpu_seconds or 0) > 0.01 and (s.memory_bytes or 0) > 1024 * 1024
        ),
    )
    assert status.memory_bytes is not None and status.memory_bytes < 1024**3


async def test_list_units_sees_only_nodeplane_units(harness: DriverHarness) -> None:
    units = [harness.unit() for _ in range(2)]
    for unit in units:
        await harness.driver.install(unit)
    names = await harness.driver.list_units()
    assert {u.name for u in units} <= set(names)
    assert all(n.startswith("nodeplane-") and n.endswith(".service") for n in names)
