"""Tailing a process's log file for a live-log session: the last lines, then new ones.

The file is the one the agent's drivers append the process's output to (`<node>/logs/<role>.log`;
a systemd unit appends there with `StandardOutput=append:`, the supervisor by redirection), so
one reader serves both. It is read, never written, and never passed to a shell.

`LogFileTail` keeps the reading position; a file that was replaced (another inode) or truncated
is read again from its start, and a file that does not exist yet (the process has not started)
is waited for. Each line is cleaned (`clean_line`) and given a level by the client's parser;
lines under the session's minimum level are left out here, before anything is sent.
"""

import os
from collections.abc import Iterable
from pathlib import Path

from nodeplane.chains.log_levels import LevelParser, line_level
from nodeplane.protocol.logs import LogLevel, LogLine, at_least, clean_line

# How far back from the end the initial tail looks: a thousand long lines fit.
TAIL_WINDOW_BYTES = 4 * 1024 * 1024
# How much one read takes; a file growing faster is caught up over several reads, and the
# session's rate limit drops what it cannot send.
READ_BYTES = 512 * 1024
# A "line" without a newline this long is cut into pieces rather than held without bound.
MAX_PENDING_BYTES = 64 * 1024


class LevelFilter:
    """Gives each line its level (continuation lines take their predecessor's) and keeps the
    ones at or above `minimum`."""

    def __init__(self, parser: LevelParser, minimum: LogLevel) -> None:
        self.parser = parser
        self.minimum = minimum
        self.previous: LogLevel | None = None

    def apply(self, raw_lines: Iterable[str]) -> list[LogLine]:
        kept: list[LogLine] = []
        for raw in raw_lines:
            text = clean_line(raw)
            level = line_level(self.parser, text, self.previous)
            self.previous = level
            if at_least(level, self.minimum):
                kept.append(LogLine(level=level, text=text))
        return kept


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class LogFileTail:
    """The reading position in one log file."""

    def __init__(self, path: Path, levels: LevelFilter) -> None:
        self.path = path
        self.levels = levels
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._pending = b""

    def _open_stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def initial(self, count: int) -> list[LogLine]:
        """The last `count` lines at or above the minimum level; following starts after them."""
        st = self._open_stat()
        if st is None:
            return []
        self._inode = (st.st_dev, st.st_ino)
        start = max(0, st.st_size - TAIL_WINDOW_BYTES)
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(st.st_size - start)
        self._offset = start + len(data)
        # A partial last line is kept for the follow; a partial first one (the window's cut) is
        # dropped.
        data, _, self._pending = data.rpartition(b"\n")
        if start > 0:
            data = data.partition(b"\n")[2]
        if count == 0:
            return []
        raw = _decode(data).split("\n") if data else []
        return self.levels.apply(raw)[-count:]

    def read_new(self) -> tuple[list[LogLine], bool]:
        """Lines appended since the last read (at most READ_BYTES of the file), and whether
        more is waiting. A replaced or truncated file is read from its start."""
        st = self._open_stat()
        if st is None:
            return [], False
        identity = (st.st_dev, st.st_ino)
        if identity != self._inode or st.st_size < self._offset:
            self._inode, self._offset, self._pending = identity, 0, b""
        if st.st_size == self._offset:
            return [], False
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(min(READ_BYTES, st.st_size - self._offset))
        self._offset += len(data)
        data = self._pending + data
        complete, newline, self._pending = data.rpartition(b"\n")
        raw: list[str] = _decode(complete).split("\n") if newline else []
        if len(self._pending) > MAX_PENDING_BYTES:
            raw.append(_decode(self._pending))
            self._pending = b""
        return self.levels.apply(raw), self._offset < st.st_size
