"""The test split itself: how tests are marked, and that a `pure` test cannot reach outside."""

import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.markers import TESTS_ROOT, ImpureTestError, needs_of


def test_this_test_is_pure(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("pure") is not None


def test_a_pure_test_cannot_start_a_process() -> None:
    with pytest.raises(ImpureTestError, match="child process"):
        subprocess.run(["true"], check=False)


def test_a_pure_test_cannot_reach_postgresql() -> None:
    with pytest.raises(ImpureTestError, match="PostgreSQL"):
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=1)
    with socket.socket() as sock, pytest.raises(ImpureTestError):
        sock.settimeout(1)
        sock.connect(("127.0.0.1", 5432))


def test_a_pure_test_cannot_leave_this_machine() -> None:
    with socket.socket() as sock, pytest.raises(ImpureTestError):
        sock.settimeout(1)
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed


def test_a_pure_test_may_talk_to_a_server_it_runs_in_a_thread() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted = threading.Thread(target=lambda: listener.accept()[0].close())
        accepted.start()
        with socket.socket() as sock:
            sock.settimeout(5)
            sock.connect(listener.getsockname())
        accepted.join(5)


@dataclass
class Collected:
    """What `needs_of` reads from a collected test."""

    path: Path
    fixturenames: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    marks: list[str] = field(default_factory=list)

    @property
    def callspec(self) -> Any:
        return _Callspec(self.params) if self.params else None

    def iter_markers(self) -> list[pytest.Mark]:
        return [getattr(pytest.mark, name).mark for name in self.marks]


@dataclass
class _Callspec:
    params: dict[str, Any]


@pytest.mark.parametrize(
    ("item", "needs"),
    [
        (Collected(TESTS_ROOT / "protocol" / "test_x.py", ["tmp_path"]), set()),
        # `org` asks for `server`, so the closure holds both.
        (Collected(TESTS_ROOT / "controlplane" / "t.py", ["org", "server"]), {"server"}),
        (Collected(TESTS_ROOT / "cli" / "t.py", ["cli", "org", "cli_server"]), {"server"}),
        (Collected(TESTS_ROOT / "agent" / "t.py", ["sd", "systemd_sandbox"]), {"systemd"}),
        (
            Collected(TESTS_ROOT / "agent" / "t.py", ["harness"], {"harness": "process"}),
            {"process"},
        ),
        (Collected(TESTS_ROOT / "chains" / "t.py", ["litecoind", "chain_clients"]), {"chain"}),
        (Collected(TESTS_ROOT / "web" / "t.py", ["page", "browser"]), {"browser"}),
        (Collected(TESTS_ROOT / "e2e" / "t.py"), {"e2e", "server", "process", "chain"}),
        (
            Collected(TESTS_ROOT / "e2e" / "t.py", ["agent", "driver"], {"driver": "systemd"}),
            {"e2e", "server", "process", "chain", "systemd"},
        ),
        (Collected(TESTS_ROOT / "controlplane" / "t.py", ["db"], {"db": "postgresql"}), {"server"}),
        (Collected(TESTS_ROOT / "controlplane" / "t.py", ["db"], {"db": "sqlite"}), set()),
        (Collected(TESTS_ROOT / "agent" / "t.py", marks=["anyio", "process"]), {"process"}),
    ],
)
def test_needs_come_from_directory_fixtures_params_and_marks(
    item: Collected, needs: set[str]
) -> None:
    assert needs_of(item) == needs  # type: ignore[arg-type]
