"""What only the systemd driver does: unit files systemd accepts, reloads, limits, cleanup."""

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from nodeplane.executor.agent.driver import ActiveState
from nodeplane.executor.agent.systemd import SystemdDriver
from nodeplane.executor.agent.units import render_unit
from nodeplane.protocol import RestartPolicy
from tests.agent.harness import HOSTILE_WORDS, SYSTEM_PYTHON, DriverHarness, read, running
from tests.support.sandbox import SystemdSandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def sd(
    systemd_sandbox: SystemdSandbox, systemd_driver: SystemdDriver, tmp_path: Path
) -> Iterator[DriverHarness]:
    """A harness on the sandbox's systemd, for the systemd-only tests."""
    h = DriverHarness(
        kind="systemd", driver=systemd_driver, workdir=tmp_path, sandbox=systemd_sandbox
    )
    yield h
    h.cleanup()


def verify(sandbox: SystemdSandbox, name: str) -> str:
    """`systemd-analyze verify` on an installed unit, inside the sandbox; its complaints."""
    result = sandbox.exec("systemd-analyze", "verify", f"/run/systemd/system/{name}", check=False)
    assert result.returncode == 0, result.stderr
    return (result.stdout + result.stderr).strip()


@pytest.mark.parametrize("under_tmp", [True, False])
async def test_rendered_units_pass_systemd_analyze_verify(
    sd: DriverHarness, under_tmp: bool
) -> None:
    assert sd.sandbox is not None
    unit = sd.unit(
        argv=(SYSTEM_PYTHON, "-c", "pass", *HOSTILE_WORDS),
        env={"NP_A": "$(id) %h ${X} \\ \" '"},
        working_dir=None if under_tmp else Path("/"),
    )
    if not under_tmp:  # the other settings: journal, limits, PrivateTmp
        unit = replace(unit, log_file=None, cpu_limit=0.5, memory_limit_bytes=1 << 28)
    await sd.driver.install(unit)
    assert ("PrivateTmp=yes" in render_unit(unit)) is not under_tmp
    assert verify(sd.sandbox, unit.name) == ""


async def test_limits_reach_systemd(sd: DriverHarness) -> None:
    assert sd.sandbox is not None
    unit = sd.unit()
    unit = replace(unit, cpu_limit=0.5, memory_limit_bytes=256 << 20)
    await sd.driver.install(unit)
    shown = sd.sandbox.systemctl(
        "show",
        "-p",
        "CPUQuotaPerSecUSec,MemoryMax,KillSignal,TimeoutStopUSec,Restart,RestartUSec",
        unit.name,
    ).stdout.split()
    assert sorted(shown) == sorted(
        [
            "CPUQuotaPerSecUSec=500ms",
            f"MemoryMax={256 << 20}",
            "KillSignal=15",
            "TimeoutStopUSec=5s",
            "Restart=on-failure",
            "RestartUSec=200ms",
        ]
    )


async def test_private_tmp_hides_the_machines_tmp(sd: DriverHarness) -> None:
    """A unit that does not live under /tmp gets a /tmp of its own (its log is opened outside)."""
    probe = sd.workdir / "visible"
    probe.write_text("x")
    # The path is passed in pieces: a whole /tmp/... argument would (rightly) turn PrivateTmp off.
    program = "import os, sys; print('exists:', os.path.exists(os.path.join('/', *sys.argv[1:])), flush=True)"
    log = sd.workdir / "probe.log"
    unit = sd.unit(
        RestartPolicy.NO,
        argv=(SYSTEM_PYTHON, "-c", program, *probe.relative_to("/").parts),
        working_dir=Path("/"),
        log_file=log,
    )
    assert "PrivateTmp=yes" in render_unit(unit)
    await sd.driver.install(unit)
    await sd.driver.start(unit.name)
    await sd.wait(unit.name, lambda s: s.active_state is ActiveState.INACTIVE)
    assert "exists: False" in read(log)


async def test_install_reloads_after_an_interrupted_install(
    sd: DriverHarness, systemd_driver: SystemdDriver
) -> None:
    """A unit file written without a daemon-reload (agent killed in between) is reloaded."""
    assert sd.sandbox is not None
    unit = sd.unit()
    await sd.driver.install(unit)
    await sd.driver.start(unit.name)  # loaded: systemd keeps the definition it read
    await sd.wait(unit.name, running)
    changed = replace(unit, restart_delay_s=7.0)
    await asyncio.sleep(0.05)  # a later mtime than the loaded file's
    (systemd_driver.unit_dir / unit.name).write_text(render_unit(changed))  # no reload
    assert (
        "NeedDaemonReload=yes"
        in sd.sandbox.systemctl("show", "-p", "NeedDaemonReload", unit.name).stdout
    )
    assert await sd.driver.install(changed) is True
    assert (
        "NeedDaemonReload=no"
        in sd.sandbox.systemctl("show", "-p", "NeedDaemonReload", unit.name).stdout
    )
    assert "RestartUSec=7s" in sd.sandbox.systemctl("show", "-p", "RestartUSec", unit.name).stdout
    assert await sd.driver.install(changed) is False


async def test_remove_forgets_a_failed_unit(sd: DriverHarness) -> None:
    assert sd.sandbox is not None
    unit = sd.unit(RestartPolicy.NO)
    await sd.driver.install(unit)
    await sd.driver.start(unit.name)
    pid = (await sd.wait(unit.name, running)).main_pid
    assert pid is not None
    sd.kill(pid)
    await sd.wait(unit.name, lambda s: s.active_state is ActiveState.FAILED)
    await sd.driver.remove(unit.name)
    listed = sd.sandbox.systemctl("list-units", "--all", "--plain", "--no-legend", unit.name).stdout
    assert unit.name not in listed
    assert unit.name not in await sd.driver.list_units()
    status = await sd.driver.status(unit.name)
    assert not status.exists and status.active_state is ActiveState.INACTIVE


async def test_list_units_includes_loaded_units_without_a_file(
    sd: DriverHarness, systemd_driver: SystemdDriver
) -> None:
    """A unit whose file vanished while it ran is still ours to stop and remove."""
    unit = sd.unit()
    await sd.driver.install(unit)
    await sd.driver.start(unit.name)
    await sd.wait(unit.name, running)
    (systemd_driver.unit_dir / unit.name).unlink()
    await systemd_driver.systemctl("daemon-reload")
    assert unit.name in await sd.driver.list_units()
    await sd.driver.remove(unit.name)
    assert unit.name not in await sd.driver.list_units()
