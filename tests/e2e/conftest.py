"""End-to-end fixtures: a control plane, and a real agent on each driver connected to it."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess
from tests.support.fleet import Org, make_org
from tests.support.gql import Client
from tests.support.sandbox import SystemdSandbox
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess

DRIVERS = ["systemd", "process"]


@pytest.fixture(scope="module")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A control plane on SQLite for the agent scenarios (the store is tested on both elsewhere)."""
    workdir = tmp_path_factory.mktemp("e2e-server")
    proc = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}", workdir=workdir, heartbeat_timeout=4
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def e2e_admin(e2e_server: ServerProcess) -> Client:
    data = Client(e2e_server.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )
    return Client(e2e_server.url, data["login"]["token"])


@pytest.fixture
def e2e_org(e2e_server: ServerProcess, e2e_admin: Client) -> Org:
    return make_org(e2e_server.url, e2e_admin)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def _cleanup_units(agent: AgentProcess) -> None:
    """Leave nothing running: every node unit of this agent, on either driver."""
    if agent.driver == "systemd" and agent.sandbox is not None:
        for unit_file in agent.sandbox.unit_dir.glob("nodeplane-*.service"):
            agent.sandbox.systemctl("stop", unit_file.name, check=False)
            unit_file.unlink(missing_ok=True)
        agent.sandbox.systemctl("daemon-reload", check=False)
        agent.sandbox.systemctl("reset-failed", check=False)
    # Process-driver children live in their own sessions; find them by their data directory.
    subprocess.run(["pkill", "-KILL", "-f", str(agent.data_dir)], check=False)


@pytest.fixture
def agent(
    request: pytest.FixtureRequest,
    driver: str,
    e2e_org: Org,
    e2e_server: ServerProcess,
    tmp_path: Path,
) -> Iterator[AgentProcess]:
    """A running agent of `e2e_org` on `driver`, online at the control plane."""
    sandbox: SystemdSandbox | None = (
        request.getfixturevalue("systemd_sandbox") if driver == "systemd" else None
    )
    # @pytest.mark.agent_supervision(restart_delay=0.5): shorter restart delays for this test.
    marker = request.node.get_closest_marker("agent_supervision")
    proc = AgentProcess(
        workdir=tmp_path / "agent",
        server_url=e2e_server.url,
        api_key=e2e_org.executor_key(),
        driver="systemd" if driver == "systemd" else "process",
        sandbox=sandbox,
        supervision=dict(marker.kwargs) if marker else {},
    )
    proc.start()
    try:
        wait_for(lambda: _online(e2e_org, proc.name), timeout=60, what="agent online")
        yield proc
    finally:
        proc.stop()
        _cleanup_units(proc)


def _online(org: Org, name: str) -> bool:
    executors = org.owner("{ executors { name status } }")["executors"]
    return any(e["name"] == name and e["status"] == "ONLINE" for e in executors)


def wait_for(predicate, timeout: float = 60, what: str = "condition", interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
