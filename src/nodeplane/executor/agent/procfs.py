"""Read processes from /proc: identity (pid + start time), state, process group, CPU and memory."""

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that the drivers use."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    utime: int  # clock ticks
    stime: int
    cutime: int  # of reaped children
    cstime: int
    start_time: int  # clock ticks after boot: with the pid, a process's identity
    rss_pages: int

    @property
    def alive(self) -> bool:
        """False for zombies (exited, not yet reaped) and dead entries."""
        return self.state not in ("Z", "X", "x")

    @property
    def cpu_seconds(self) -> float:
        """User plus system time of the process and of the children it reaped."""
        return (self.utime + self.stime + self.cutime + self.cstime) / CLOCK_TICKS

    @property
    def rss_bytes(self) -> int:
        return self.rss_pages * PAGE_SIZE


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line; the command name may hold spaces and parentheses."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    f = tail.split()
    # f[0] is field 3 of proc(5) (state); field n is f[n - 3].
    return ProcStat(
        pid=pid,
        state=f[0],
        ppid=int(f[1]),
        pgrp=int(f[2]),
        session=int(f[3]),
        utime=int(f[11]),
        stime=int(f[12]),
        cutime=int(f[13]),
        cstime=int(f[14]),
        start_time=int(f[19]),
        rss_pages=int(f[21]),
    )


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The process's stat, or None if there is no such process."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def session_members(session: int, proc: Path = PROC) -> list[ProcStat]:
    """Every live process of a session (a supervised unit is one session: setsid at spawn)."""
    return sessions(proc).get(session, [])


def sessions(proc: Path = PROC) -> dict[int, list[ProcStat]]:
    """Every live process, by session: one pass over /proc answers for every unit."""
    found: dict[int, list[ProcStat]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name), proc)
        if stat is not None and stat.alive:
            found.setdefault(stat.session, []).append(stat)
    return found


def find_session_leader(env_entry: str, proc: Path = PROC) -> ProcStat | None:
    """The live session leader whose environment holds `env_entry` (`NAME=value`), if any."""
    name, _, value = env_entry.partition("=")
    leaders = session_leaders_with_env(name, proc)
    return next((leader.stat for leader in leaders if leader.env_value == value), None)


def boot_id(proc: Path = PROC) -> str:
    """This boot's id: start times only compare within one boot."""
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Leader:
    """A live session leader with what identifies the unit it runs."""

    stat: ProcStat
    env_value: str  # the value of the variable searched for
    cwd: str | None
    argv: tuple[str, ...]


def session_leaders_with_env(name: str, proc: Path = PROC) -> list[Leader]:
    """Every live session leader whose environment sets `name`, with its cwd and argv."""
    prefix = f"{name}=".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name), proc)
        if stat is None or stat.session != stat.pid or not stat.alive:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        value = next((e[len(prefix) :] for e in environ if e.startswith(prefix)), None)
        if value is None:
            continue
        try:
            cwd: str | None = os.readlink(entry / "cwd")
        except OSError:
            cwd = None
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            raw = b""
        argv = tuple(w.decode(errors="surrogateescape") for w in raw.split(b"\0")[:-1])
        found.append(Leader(stat, value.decode(errors="replace"), cwd, argv))
    return found
