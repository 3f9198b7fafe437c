"""Shared fixtures: real control-plane processes on SQLite and PostgreSQL, organizations, executors."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.markers import mark_items, purity_guard
from tests.support.sandbox import systemd_sandbox
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    new_database_url,
)

BACKENDS = ["sqlite", "postgresql"]
SHARED_MAX_POLL_WAIT = 5.0

# One sandboxed systemd per session, shared by every test; new_database_url for the modules
# that take it from here.
__all__ = ["new_database_url", "systemd_sandbox"]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave logs and screenshots for people to look at."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """An empty PostgreSQL database of the test's own, dropped after."""
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One control-plane process per backend, shared; tests isolate themselves by organization."""
    workdir = tmp_path_factory.mktemp(f"server-{backend}")
    url = new_database_url(backend, workdir)
    # A short poll cap, so the test of the cap does not wait out the protocol's 30 s; polls held
    # here for a commit are woken long before it.
    proc = ServerProcess(database_url=url, workdir=workdir, max_poll_wait=SHARED_MAX_POLL_WAIT)
    proc.start()
    yield proc
    proc.stop()
    if backend == "postgresql":
        drop_pg_database(url)


@pytest.fixture(scope="session")
def system_admin(server: ServerProcess) -> Client:
    """The first admin, created from NODEPLANE_ADMIN_EMAIL/PASSWORD on the empty database."""
    data = Client(server.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )
    return Client(server.url, data["login"]["token"])


@pytest.fixture
def org(server: ServerProcess, system_admin: Client) -> Org:
    """A fresh organization with its owner signed in."""
    return make_org(server.url, system_admin)


@pytest.fixture
def executor(org: Org, server: ServerProcess) -> FakeExecutor:
    """A protocol-level executor of `org` that has synced once."""
    ex = FakeExecutor(server.url, org.executor_key())
    ex.sync()
    return ex


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what each test needs (server, systemd, chain, ...) and the rest `pure`."""
    mark_items(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Pure tests set up (fixtures of every scope) without child processes or databases."""
    if item.get_closest_marker("pure") is None:
        return (yield)
    with purity_guard():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Pure tests run without child processes, databases or the network."""
    if item.get_closest_marker("pure") is None:
        return (yield)
    with purity_guard():
        return (yield)
