"""Start and stop real control-plane processes for tests."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.support.tls import TLS

ADMIN_EMAIL = "admin@example.test"
ADMIN_PASSWORD = "admin-password-1"
PG_ADMIN_URL = os.environ.get(
    "NODEPLANE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def admin_token(server_url: str) -> str:
    """A session token of the first admin (ADMIN_EMAIL) of the server at `server_url`."""
    from tests.support.gql import Client

    token: str = Client(server_url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )["login"]["token"]
    return token


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    name = f"nodeplane_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    """Drop a database made by `create_pg_database`."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ServerProcess:
    """One `nodeplane server` process on a loopback port."""

    database_url: str
    workdir: Path
    heartbeat_timeout: float = 3.0
    # The spec long-poll's cap (NODEPLANE_MAX_POLL_WAIT); None keeps the protocol's 30 s.
    max_poll_wait: float | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until /healthz answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = (self.workdir / f"server-{self.port}-{self.starts}.log").open("wb")
        env = {
            **os.environ,
            "NODEPLANE_DATABASE_URL": self.database_url,
            "NODEPLANE_ADMIN_EMAIL": ADMIN_EMAIL,
            "NODEPLANE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "NODEPLANE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "NODEPLANE_SWEEP_INTERVAL": "0.5",
            # The alert timer (sync_stalled) every second, not every 10 s.
            "NODEPLANE_ALERT_INTERVAL": "1",
            # Tests age rows by hand and watch them go: sweep accounts often (default 60 s).
            "NODEPLANE_ACCOUNT_SWEEP_INTERVAL": "1",
            # ... and events as well (default 300 s).
            "NODEPLANE_EVENT_PRUNE_INTERVAL": "1",
            **(
                {"NODEPLANE_MAX_POLL_WAIT": str(self.max_poll_wait)}
                if self.max_poll_wait is not None
                else {}
            ),
            **self.extra_env,
        }
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "nodeplane", "server"),
                *("--port", str(self.port), "--json-logs", *self.extra_args),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=TLS).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy; see {log.name}")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (`start` brings it back on the same port)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it hangs past `timeout`."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def new_database_url(backend: str, tmp_path: Path) -> str:
    """An empty database of `backend`."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'nodeplane.db'}"
    return create_pg_database()


@contextmanager
def backend_server(
    backend: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A started server on an empty database of `backend` ("sqlite" or "postgresql") in
    `workdir`, stopped after (and its PostgreSQL database dropped)."""
    url = new_database_url(backend, workdir)
    server = ServerProcess(database_url=url, workdir=workdir / "server", extra_env=extra_env or {})
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if backend == "postgresql":
            drop_pg_database(url)


@contextmanager
def pg_server(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """A started server on a database of its own on PostgreSQL, stopped and dropped after."""
    url = create_pg_database()
    server = ServerProcess(database_url=url, workdir=workdir, extra_args=list(extra_args))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_pg_database(url)
