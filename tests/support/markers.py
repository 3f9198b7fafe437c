"""What each test needs from the machine, as pytest markers set at collection, and the guard
that keeps `pure` tests pure.

`./dev test --fast` runs `pytest -m pure`: the tests that need nothing but the venv. A test is
pure unless its directory, its fixtures (looked up through the whole fixture closure, so `org`
counts as `server`) or its module's `pytestmark` say it needs something real. A test that starts
real things through helpers rather than fixtures must carry a module mark; if it does not, the
guard (active while a pure test is set up and run) fails it the moment it spawns a process,
connects to a database server or opens a connection off this machine.
"""

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Marker -> what a test so marked needs. Registered in pyproject.toml (--strict-markers).
NEEDS = ("server", "systemd", "chain", "process", "e2e", "browser", "kube")

# Fixtures that bring up something real; any test whose fixture closure holds one gets the mark.
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    # control-plane processes (tests/conftest.py, tests/cli/conftest.py, tests/e2e/conftest.py)
    "server": ("server",),
    "cli_server": ("server",),
    "e2e_server": ("server",),
    # an empty PostgreSQL database (tests/conftest.py)
    "pg_url": ("server",),
    # the sandboxed systemd (tests/support/sandbox.py)
    "systemd_sandbox": ("systemd",),
    # real chain clients (tests/chains/conftest.py)
    "chain_clients": ("chain",),
    # headless Chromium (tests/web/conftest.py)
    "browser": ("browser",),
    # a real agent process, running litecoind for the UI (tests/web/conftest.py)
    "web_agent": ("process", "chain"),
    # the Kubernetes test cluster (tests/operator/conftest.py)
    "kube_cluster": ("kube",),
}

# Fixtures whose parameter decides: the driver harness runs each scenario on both drivers.
PARAM_MARKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("harness", "systemd"): ("systemd",),
    ("harness", "process"): ("process",),
    # the e2e agent's driver (tests/e2e/conftest.py)
    ("driver", "systemd"): ("systemd",),
}

# Any parameter with this value: the PostgreSQL half of a test run on both databases.
PARAM_VALUE_MARKS: dict[str, tuple[str, ...]] = {"postgresql": ("server",)}

# Directories (under tests/) whose every test needs these.
DIRECTORY_MARKS: dict[str, tuple[str, ...]] = {
    # a control plane, agents and (nearly always) litecoind or anvil
    "e2e": ("e2e", "server", "process", "chain"),
}

TESTS_ROOT = Path(__file__).resolve().parent.parent


def needs_of(item: pytest.Item) -> set[str]:
    """The markers from NEEDS that `item` gets from its directory, fixtures and own marks."""
    needs = {m.name for m in item.iter_markers() if m.name in NEEDS}
    path = Path(str(item.path)).resolve()
    if path.is_relative_to(TESTS_ROOT):
        top = path.relative_to(TESTS_ROOT).parts[0]
        needs.update(DIRECTORY_MARKS.get(top, ()))
    for name in getattr(item, "fixturenames", ()):
        needs.update(FIXTURE_MARKS.get(name, ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for key, value in callspec.params.items():
            needs.update(PARAM_MARKS.get((key, str(value)), ()))
            needs.update(PARAM_VALUE_MARKS.get(str(value), ()))
    return needs


def mark_items(items: list[pytest.Item]) -> None:
    """Add the markers each test needs, and `pure` to those that need none."""
    for item in items:
        if item.get_closest_marker("pure") is not None:
            raise pytest.UsageError(
                f"{item.nodeid}: `pure` is decided by tests/support/markers.py, not set by hand"
            )
        needs = needs_of(item)
        for name in sorted(needs - {m.name for m in item.iter_markers()}):
            item.add_marker(name)
        if not needs:
            item.add_marker("pure")


class ImpureTestError(AssertionError):
    """A `pure` test reached for something outside this Python process."""


def _refuse(what: str) -> ImpureTestError:
    return ImpureTestError(
        f"a pure test {what}; give its module a marker (pytestmark = pytest.mark.process, "
        "server, chain, ...) or a fixture listed in tests/support/markers.py"
    )


POSTGRES_PORT = 5432


def _allowed(address: Any) -> bool:
    """Loopback, except PostgreSQL's port; AF_UNIX paths stay on this machine too."""
    if not isinstance(address, tuple) or not address:
        return True
    host = str(address[0])
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    return loopback and (len(address) < 2 or address[1] != POSTGRES_PORT)


@contextmanager
def purity_guard() -> Iterator[None]:
    """While active: no child processes, no PostgreSQL, no connections off this machine.

    A loopback connection to a server the test itself runs in a thread stays allowed; a server
    in another process can only exist if some fixture spawned it, which the guard refuses.
    """
    patch = pytest.MonkeyPatch()

    def no_child(*args: Any, **kwargs: Any) -> Any:
        raise _refuse("started a child process")

    def no_db(*args: Any, **kwargs: Any) -> Any:
        raise _refuse("connected to PostgreSQL")

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(sock: socket.socket, address: Any) -> None:
        if not _allowed(address):
            raise _refuse(f"connected to {address!r}")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not _allowed(address):
            raise _refuse(f"connected to {address!r}")
        return real_connect_ex(sock, address)

    patch.setattr(subprocess.Popen, "_execute_child", no_child)
    patch.setattr(os, "fork", no_child)
    patch.setattr(os, "posix_spawn", no_child)
    patch.setattr(os, "system", no_child)
    patch.setattr(socket.socket, "connect", connect)
    patch.setattr(socket.socket, "connect_ex", connect_ex)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    else:
        patch.setattr(psycopg, "connect", no_db)
        patch.setattr(psycopg.Connection, "connect", classmethod(no_db))
        patch.setattr(psycopg.AsyncConnection, "connect", classmethod(no_db))
    try:
        yield
    finally:
        patch.undo()
