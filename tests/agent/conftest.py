"""Fixtures for the agent's drivers: a sandboxed systemd, and a harness per driver kind."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver
from tests.agent.harness import DriverHarness
from tests.support.sandbox import SystemdSandbox


@pytest.fixture
def anyio_backend() -> str:
    """The drivers run on asyncio."""
    return "asyncio"


@pytest.fixture
def systemd_driver(systemd_sandbox: SystemdSandbox) -> SystemdDriver:
    """A driver for the sandbox's systemd, run from outside it."""
    return SystemdDriver(
        systemd_sandbox.unit_dir, systemd_sandbox.prefix, proc_dir=systemd_sandbox.proc_dir
    )


@pytest.fixture(params=["systemd", "process"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverHarness]:
    """The same scenarios against both drivers; removes whatever units a test leaves behind."""
    if request.param == "systemd":
        sandbox: SystemdSandbox = request.getfixturevalue("systemd_sandbox")
        h = DriverHarness(
            kind="systemd",
            driver=request.getfixturevalue("systemd_driver"),
            workdir=tmp_path,
            sandbox=sandbox,
        )
    else:
        h = DriverHarness(
            kind="process", driver=ProcessDriver(tmp_path / "supervisor"), workdir=tmp_path
        )
    yield h
    h.cleanup()
