"""A server under load: the process, its database, an owner's token and the executors made."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from tests.support.server import (
    PG_ADMIN_URL,
    ServerProcess,
    admin_token,
    create_pg_database,
    drop_pg_database,
)

from bench.loadgen.procstat import tree_cpu_seconds, tree_rss_bytes
from bench.loadgen.provision import SimulatedExecutorSpec, provision
from nodeplane.controlplane.profiling import PROFILE_ENV

# Production cadences for the server's sweeps (the test harness makes them fast), and a long
# heartbeat timeout, so executors idle between scenarios are not marked offline mid-run.
# The metrics token opens /metrics for the scrape scenario (bench/loadgen/scrape.py); nothing
# scrapes it in the others.
METRICS_TOKEN = "bench-metrics-token-0123456789"
SERVER_ENV = {
    "NODEPLANE_SWEEP_INTERVAL": "5",
    "NODEPLANE_ACCOUNT_SWEEP_INTERVAL": "60",
    # The harness runs the alert timer every second and the events' pruning every second; left
    # so, the timer ran at every 5 s sweep and the pruner's reads every second under the load.
    "NODEPLANE_ALERT_INTERVAL": "10",
    "NODEPLANE_EVENT_PRUNE_INTERVAL": "300",
    "NODEPLANE_METRICS_TOKEN": METRICS_TOKEN,
}
HEARTBEAT_TIMEOUT = 600.0


@dataclass
class Target:
    """A running server and the simulated executors provisioned on it so far."""

    backend: str
    database_url: str
    server: ServerProcess
    token: str
    workers: int = 1
    fleets: dict[str, list[SimulatedExecutorSpec]] = field(default_factory=dict)
    # Nodes that lifecycle actions left stopped (bench/loadgen/run.py, lifecycle_actions).
    stopped: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.server.process is not None
        return self.server.process.pid

    @property
    def label(self) -> str:
        """The backend, with the worker count when there are several."""
        return self.backend if self.workers == 1 else f"{self.backend}, {self.workers} workers"

    def cpu_seconds(self) -> float:
        """CPU seconds the server has used so far, its worker processes included."""
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        """The server's resident memory now, its worker processes included."""
        return tree_rss_bytes(self.pid)

    def fleet(self, prefix: str, count: int, nodes: int = 10) -> list[SimulatedExecutorSpec]:
        """The first `count` executors named `prefix-…`, provisioning the ones missing."""
        have = self.fleets.setdefault(prefix, [])
        if len(have) < count:
            have += provision(
                self.database_url,
                self.token,
                prefix=prefix,
                start=len(have),
                count=count - len(have),
                nodes=nodes,
            )
        return have[:count]

    def database_pids(self) -> list[int]:
        """The PostgreSQL backends serving this server's database (none on SQLite)."""
        if self.backend != "postgresql":
            return []
        name = self.database_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        return [int(r[0]) for r in rows]


@contextmanager
def target(
    backend: str,
    profile: Path | None = None,
    workdir: Path | None = None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Target]:
    """A fresh server on an empty `backend` database, with the first admin signed in; its log
    (and SQLite file) in `workdir`, a new temporary directory by default; `workers` server
    processes (PostgreSQL only); `extra_env` added to the server's environment."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"nodeplane-load-{backend}-"))
    url = f"sqlite:///{workdir / 'load.db'}" if backend == "sqlite" else create_pg_database()
    env = {**SERVER_ENV, **({PROFILE_ENV: str(profile)} if profile else {}), **(extra_env or {})}
    server = ServerProcess(
        database_url=url,
        workdir=workdir,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        extra_env=env,
        extra_args=["--workers", str(workers)] if workers > 1 else [],
    )
    server.start()
    try:
        token = admin_token(server.url)
        yield Target(backend, url, server, token, workers)
    finally:
        # A profiled server is slower to drain its connections and then writes its profile:
        # killed at the usual 15 s, it would leave none.
        server.stop(timeout=90.0 if profile else 15.0)
        if backend == "postgresql":
            drop_pg_database(url)
