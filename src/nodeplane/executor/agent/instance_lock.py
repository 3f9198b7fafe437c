"""One agent process per data directory: an exclusive lock on `<data_dir>/agent.lock`.

Two agents on one data directory would both supervise every node there: duplicate starts fail on
the chain client's own data-directory lock, state files are written by two writers, and a process
is left running that neither tracks. So an agent takes this lock at start and keeps it for as long
as it runs (the kernel drops it when the process ends, however it ends); a second agent finds it
held and stops with a message naming the directory and the holder's pid.

The lock file also records who holds it: pid, agent instance id, the host's boot id and the
directory's path. The next agent on the same data directory, in the same boot of the same host,
is that instance's successor (the lock proves the predecessor has exited), and tells the control
plane so: a restart takes over at once instead of being refused as a second instance. A copy of
the data directory on another host (a cloned disk) carries another boot id, and a copy elsewhere
on the same host another path, so neither claims succession.
"""

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from nodeplane.protocol.executor_api import MAX_PREVIOUS_INSTANCES

LOCK_FILE = "agent.lock"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_MAX_RECORD_BYTES = 4096


class DataDirLocked(RuntimeError):
    """Another agent process holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another agent process ({holder}) is running on the data directory {data_dir}: "
            "stop it first, or give this agent its own data_dir (two agents on one data "
            "directory would run every node twice)"
        )
        self.data_dir = data_dir
        self.pid = pid


def boot_id() -> str:
    """This boot of this host ('' where the kernel does not say)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _read_record(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, _MAX_RECORD_BYTES, 0)
        record = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _predecessors(record: dict[str, Any], boot: str, data_dir: str) -> tuple[UUID, ...]:
    """The instances that ran on this data directory before, newest first, if in this boot
    (and at this path: a copy of the directory elsewhere on the host is another agent)."""
    if not boot or record.get("bootId") != boot or record.get("dataDir") != data_dir:
        return ()
    raw = [record.get("instanceId"), *(record.get("previousInstanceIds") or [])]
    found = [u for u in (_uuid(v) for v in raw if v) if u is not None]
    return tuple(dict.fromkeys(found))[:MAX_PREVIOUS_INSTANCES]


@dataclass
class AgentLock:
    """The held lock of one data directory; released when closed or when the process ends."""

    path: Path
    instance_id: UUID
    previous_instance_ids: tuple[UUID, ...]
    fd: int

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_data_dir(data_dir: Path, instance_id: UUID) -> AgentLock:
    """Take `<data_dir>/agent.lock` for this process (instance `instance_id`), or raise
    DataDirLocked naming the holder. The descriptor is close-on-exec, so node processes the
    agent starts never hold it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_record(fd).get("pid")
        os.close(fd)
        raise DataDirLocked(data_dir, pid if isinstance(pid, int) else None) from None
    except BaseException:
        os.close(fd)
        raise
    boot, where = boot_id(), str(data_dir.resolve())
    previous = _predecessors(_read_record(fd), boot, where)
    record = {
        "pid": os.getpid(),
        "instanceId": str(instance_id),
        "bootId": boot,
        "dataDir": where,
        "previousInstanceIds": [str(u) for u in previous[: MAX_PREVIOUS_INSTANCES - 1]],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return AgentLock(path=path, instance_id=instance_id, previous_instance_ids=previous, fd=fd)
