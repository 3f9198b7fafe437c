"""Choosing the driver: systemd when it is PID 1, the built-in supervisor otherwise."""

from pathlib import Path

import pytest

from nodeplane.executor.agent.drivers import detect_driver_kind, make_driver, systemd_is_pid1
from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver
from tests.agent.harness import PYTHON
from tests.support.sandbox import SystemdSandbox


def fake_host(root: Path, pid1: str, booted: bool) -> tuple[Path, Path]:
    """A /proc and /run with just what detection reads."""
    (root / "proc" / "1").mkdir(parents=True)
    (root / "proc" / "1" / "comm").write_text(f"{pid1}\n")
    (root / "run").mkdir()
    if booted:
        (root / "run" / "systemd" / "system").mkdir(parents=True)
    return root / "proc", root / "run"


@pytest.mark.parametrize(
    ("pid1", "booted", "expected"),
    [
        ("systemd", True, True),
        ("systemd", False, False),
        ("init", True, False),
        ("bash", False, False),
    ],
)
def test_systemd_is_pid1(tmp_path: Path, pid1: str, booted: bool, expected: bool) -> None:
    proc, run = fake_host(tmp_path, pid1, booted)
    assert systemd_is_pid1(proc, run) is expected


def test_configured_driver_wins() -> None:
    assert detect_driver_kind("process") == "process"
    assert detect_driver_kind("systemd") == "systemd"


def test_auto_inside_the_sandbox_is_systemd(systemd_sandbox: SystemdSandbox) -> None:
    code = "from nodeplane.executor.agent.drivers import detect_driver_kind; print(detect_driver_kind())"
    assert systemd_sandbox.exec(PYTHON, "-c", code).stdout.strip() == "systemd"


def test_auto_on_this_host_matches_pid1() -> None:
    expected = "systemd" if systemd_is_pid1() else "process"
    assert detect_driver_kind() == expected


def test_make_driver(tmp_path: Path) -> None:
    systemd = make_driver("systemd", data_dir=tmp_path, unit_dir=tmp_path / "units")
    assert isinstance(systemd, SystemdDriver) and systemd.unit_dir == tmp_path / "units"
    process = make_driver("process", data_dir=tmp_path)
    assert isinstance(process, ProcessDriver) and process.state_dir == tmp_path / "supervisor"
