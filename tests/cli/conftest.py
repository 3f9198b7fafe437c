"""CLI fixtures: one control plane on SQLite for this package, and the CLI as a real subprocess."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodeplane.protocol import AssignedNodeSpec
from tests.support.fleet import LITECOIN_SPEC, FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess


@pytest.fixture(scope="package")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A control plane on SQLite (the API is tested on both databases elsewhere)."""
    workdir = tmp_path_factory.mktemp("cli-server")
    proc = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}", workdir=workdir, heartbeat_timeout=60
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="package")
def cli_admin(cli_server: ServerProcess) -> Client:
    data = Client(cli_server.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )
    return Client(cli_server.url, data["login"]["token"])


@pytest.fixture
def org(cli_server: ServerProcess, cli_admin: Client) -> Org:
    """A fresh organization with its owner signed in."""
    return make_org(cli_server.url, cli_admin)


@pytest.fixture
def executor(org: Org, cli_server: ServerProcess) -> FakeExecutor:
    """A protocol-level executor of `org` that has synced once."""
    ex = FakeExecutor(cli_server.url, org.executor_key())
    ex.sync()
    return ex


@dataclass
class Result:
    """A finished CLI run."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def said(self) -> str:
        """stderr with Rich's line wrapping undone, to check whole sentences."""
        return " ".join(self.stderr.split())


@dataclass
class Cli:
    """Runs `python -m nodeplane` as a user would, with its own config directory."""

    url: str | None
    token: str | None
    config_home: Path
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("NODEPLANE_")}
        base |= {"XDG_CONFIG_HOME": str(self.config_home), "COLUMNS": "200", "NO_COLOR": "1"}
        if self.url:
            base["NODEPLANE_URL"] = self.url
        if self.token:
            base["NODEPLANE_TOKEN"] = self.token
        return base | self.env | (extra or {})

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "nodeplane", *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=self.environment(env),
            timeout=120,
            # No controlling terminal: prompts read stdin, as in a CI job.
            start_new_session=True,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str) -> "subprocess.Popen[str]":
        """The CLI running in the background, for what happens while it waits."""
        return subprocess.Popen(
            [sys.executable, "-m", "nodeplane", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment(),
            start_new_session=True,
            # Ctrl-C must reach it even when the test run itself ignores SIGINT (a background job).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


@pytest.fixture
def cli(org: Org, tmp_path: Path) -> Cli:
    """The CLI signed in as `org`'s owner through NODEPLANE_URL/NODEPLANE_TOKEN."""
    return Cli(org.base_url, org.owner.token, tmp_path / "config")


@pytest.fixture
def bare_cli(tmp_path: Path) -> Cli:
    """The CLI with no URL or token from the environment."""
    return Cli(None, None, tmp_path / "config")


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], Any]], Future[Any]]]:
    """Run a callable in a thread (an executor reacting while the CLI waits); errors re-raised."""
    pool = ThreadPoolExecutor(max_workers=2)
    futures: list[Future[Any]] = []

    def submit(fn: Callable[[], Any]) -> Future[Any]:
        future = pool.submit(fn)
        futures.append(future)
        return future

    yield submit
    for future in futures:
        future.result(timeout=60)
    pool.shutdown()


def deploy(org: Org, executor: FakeExecutor, name: str = "ltc-1") -> dict[str, Any]:
    """A litecoin regtest node created over the API (setup, not the thing under test)."""
    node: dict[str, Any] = org.owner(
        "mutation($i: CreateNodeInput!) { createNode(input: $i) { id name revision } }",
        {"i": {"executorId": executor.id, "name": name, "spec": LITECOIN_SPEC}},
    )["createNode"]
    return node


def act(org: Org, node_id: str, action: str) -> int:
    """A lifecycle action over the API; returns the new revision."""
    data = org.owner(
        "mutation($id: UUID!, $a: LifecycleAction!) { requestNodeLifecycleAction(nodeId: $id, action: $a) { revision } }",
        {"id": node_id, "a": action},
    )
    revision: int = data["requestNodeLifecycleAction"]["revision"]
    return revision


def next_spec(
    executor: FakeExecutor, node_id: str, after_revision: int, timeout: float = 30
) -> AssignedNodeSpec:
    """Long-poll as the executor until the node has a revision after `after_revision` or is
    deleted: what a real executor does before it acts."""
    known = {node_id: after_revision}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for spec in executor.poll(known, wait=5):
            if str(spec.node_id) == node_id and (spec.revision > after_revision or spec.deleted):
                return spec
            known[str(spec.node_id)] = spec.revision
    raise AssertionError(f"no new spec for {node_id} after revision {after_revision}")
