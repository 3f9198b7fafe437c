"""argon2 work off the event loop: a small thread pool with a bounded queue.

Hashing or verifying a password takes about half a second of CPU and 64 MiB of memory. Run on the
event loop it stalls every other request (issue 7, finding 7); run in an unbounded pool it lets
anyone queue work without end. Here a fixed number of threads do it (argon2-cffi releases the GIL)
and a caller who would have to wait behind too many others, or whose address already has its
share in flight, is refused at once with `rate_limited`.
"""

import asyncio
import contextlib
import os
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from nodeplane.controlplane.auth.secrets import hash_password, verify_password
from nodeplane.controlplane.config import AccountLimits
from nodeplane.controlplane.errors import DomainError, ErrorCode

# How much lower than the event loop the argon2 threads run (a nice increment, Linux only).
WORKER_NICENESS = 10


def _lower_thread_priority() -> None:
    """Run this worker thread, and the lane threads argon2 starts from it, below the event loop.

    On Linux a nice value belongs to a thread and is inherited by the threads it creates, so
    the event loop wins the CPU whenever it has a request to serve.
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


def busy() -> DomainError:
    """The refusal when the pool is full: cheap to give, and the caller may retry shortly."""
    return DomainError(
        ErrorCode.RATE_LIMITED,
        "the server is busy checking passwords; try again in a moment",
        details={"retryAfterSeconds": 1},
    )


class PasswordWorkers:
    """The process's argon2 threads, with admission control in front of them."""

    def __init__(self, threads: int, max_waiting: int, max_per_address: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads),
            thread_name_prefix="nodeplane-passwords",
            initializer=_lower_thread_priority,
        )
        self._capacity = max(1, threads) + max(0, max_waiting)
        self._max_per_address = max(1, max_per_address)
        self._admitted = 0
        self._per_address: Counter[str] = Counter()

    @asynccontextmanager
    async def admitted(self, address: str) -> AsyncIterator["PasswordWorkers"]:
        """Hold a place for password work from `address`, or raise `rate_limited` at once."""
        # One event loop runs every request, so these counters need no lock.
        if self._admitted >= self._capacity or self._per_address[address] >= self._max_per_address:
            raise busy()
        self._admitted += 1
        self._per_address[address] += 1
        try:
            yield self
        finally:
            self._admitted -= 1
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    async def hash(self, password: str) -> str:
        """An argon2id hash of `password`, computed on a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, hash_password, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches, on a worker thread; as slow for no account as for one."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, verify_password, password_hash, password
        )

    def shutdown(self) -> None:
        """Stop the threads once the work already handed to them is done."""
        self._pool.shutdown(wait=False, cancel_futures=True)


_workers: PasswordWorkers | None = None


def password_workers(limits: AccountLimits) -> PasswordWorkers:
    """The process-wide pool, made on first use: one server process has one event loop, and
    every entry point (GraphQL, the web sign-in form) must share the same bound."""
    global _workers
    if _workers is None:
        _workers = PasswordWorkers(
            limits.password_workers, limits.password_max_waiting, limits.password_max_per_address
        )
    return _workers


def shutdown_password_workers() -> None:
    """Release the pool when the server stops."""
    global _workers
    if _workers is not None:
        _workers.shutdown()
        _workers = None
