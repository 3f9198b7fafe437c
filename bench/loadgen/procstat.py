"""What a process costs, read from /proc (Linux): CPU time and resident memory."""

import contextlib
import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def rss_bytes(pid: int) -> int:
    """The process's resident set size now."""
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * _PAGE


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a server's worker processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += parents.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by `pid` and its live descendants."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(member)
    return total


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its live descendants (shared pages counted in each)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += rss_bytes(member)
    return total
