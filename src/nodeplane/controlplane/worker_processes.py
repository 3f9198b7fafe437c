"""Several server processes on one port: `nodeplane server --workers N` (PostgreSQL only).

One Python process answers from one event loop on one core. With PostgreSQL, every control
plane process is a full replica (migrations, the first admin, sweeps and wake-ups are all safe
to run from several: tests/controlplane/test_replicas.py), so N processes on one host use N
cores. Each binds the port with SO_REUSEPORT and the kernel spreads new connections across
them; executors keep their connections, so each stays with one process. The parent only
supervises: it starts the workers, restarts one that dies, and passes SIGTERM/SIGINT on.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

from nodeplane.controlplane.metrics.multiprocess import (
    MULTIPROC_ENV,
    shared_metrics_dir,
    worker_exited,
)
from nodeplane.controlplane.profiling import LOOP_TURNS_ENV, PROFILE_ENV

log = structlog.get_logger(__name__)

# Set in a worker's environment: which worker it is (also tells `server` to bind SO_REUSEPORT).
WORKER_ENV = "NODEPLANE_WORKER_INDEX"
RESTART_DELAY_S = 1.0
_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 20.0


class WorkersNeedPostgres(ValueError):
    """More than one worker was asked for on SQLite, which has a single writer."""


def check_workers(workers: int, database_dialect: str) -> None:
    """Refuse a worker count the database cannot serve."""
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    if workers > 1 and database_dialect != "postgresql":
        raise WorkersNeedPostgres(
            "--workers above 1 needs PostgreSQL: SQLite has one writer, shared by one process"
        )


def reuse_port_socket(host: str, port: int, *, share: bool = True) -> socket.socket:
    """A listening TCP socket on host:port that other workers can bind too (SO_REUSEPORT);
    with `share` false, one that no other socket may bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says
    # TCP, and with Nagle on, a response written in two parts waited out the client's delayed
    # ACK (40 ms on every held poll's wake-up).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """In the forked child before exec: SIGTERM when the supervisor dies (Linux), so a killed
    supervisor does not leave workers holding the port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker_env(index: int, metrics_dir: Path) -> dict[str, str]:
    env = {**os.environ, WORKER_ENV: str(index), MULTIPROC_ENV: str(metrics_dir)}
    for name in (PROFILE_ENV, LOOP_TURNS_ENV):
        if profile := env.get(name):
            env[name] = f"{profile}.{index}"  # one profile file per worker
    return env


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run `workers` copies of `nodeplane server <argv>` until a signal; returns an exit code.

    `argv` is the server's own arguments without --workers. A worker that exits while the
    supervisor is not stopping is restarted after a second. The workers share one directory
    for their request metrics (controlplane/metrics/multiprocess.py).
    """
    with shared_metrics_dir() as metrics_dir:
        return _supervise(argv, workers, metrics_dir)


def _supervise(argv: Sequence[str], workers: int, metrics_dir: Path) -> int:
    stopping = threading.Event()
    command = [sys.executable, "-m", "nodeplane", "server", *argv]
    children: dict[int, subprocess.Popen[bytes]] = {}

    def start(index: int) -> None:
        children[index] = subprocess.Popen(
            command, env=_worker_env(index, metrics_dir), preexec_fn=_die_with_parent
        )
        log.info("server.worker_started", worker=index, pid=children[index].pid)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(workers):
            start(index)
        while not stopping.is_set():
            for index, child in list(children.items()):
                if child.poll() is not None and not stopping.is_set():
                    log.warning("server.worker_exited", worker=index, code=child.returncode)
                    worker_exited(metrics_dir, child.pid)
                    time.sleep(RESTART_DELAY_S)
                    if not stopping.is_set():
                        start(index)
            stopping.wait(0.5)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        code = 0
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            code = code or (child.returncode if child.returncode > 0 else 0)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
