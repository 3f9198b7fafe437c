"""Request metrics summed across `nodeplane server --workers N` (prometheus_client's
multiprocess mode).

A scrape reaches one worker, picked by the kernel. So that it reports the whole server, the
supervisor gives every worker one directory in PROMETHEUS_MULTIPROC_DIR; each worker writes its
instruments there (memory-mapped files, set before prometheus_client is imported in the worker),
and the worker answering a scrape sums them. Counts of a worker that died stay in the sums, as a
counter must; its held-poll gauge is dropped when the supervisor notices the exit.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def process_registry() -> CollectorRegistry:
    """This process's instruments, or all workers' when running as one of several."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    # A lone process: its instruments plus process_* and python_* of the default registry.
    return REGISTRY


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """The workers' directory: PROMETHEUS_MULTIPROC_DIR if set (emptied of old files, as
    prometheus_client asks), else a temporary one removed at the end."""
    if explicit := os.environ.get(MULTIPROC_ENV):
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="nodeplane-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(directory: Path, pid: int) -> None:
    """Drop a dead worker's live gauges (its held polls are gone with it)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
