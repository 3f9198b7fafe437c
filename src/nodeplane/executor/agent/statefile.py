"""Small files the agent owns (ports, supervisor state, rendered config): written and read safely.

Writes are atomic (a temp file with a unique name in the same directory, then rename), so a reader
never sees half a file and two writers never share a temp file; they happen only when the content
changes, so a full or read-only disk fails only an apply that has something to write. A file that
cannot be parsed is moved aside (`<name>.corrupt-<timestamp>`) for a human to look at, never
deleted, and rebuilt by its owner.
"""

import contextlib
import os
import tempfile
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

CORRUPT_MARK = ".corrupt-"
# A file whose modification time is this close to when it was read may have been changed again
# within the same timestamp tick, unseen by its times: it is read again until it is older (git's
# "racily clean" rule). Ticks are milliseconds or less on Linux file systems, 2 s on FAT.
RACY_WINDOW_NS = 2_000_000_000

FileKey = tuple[int, int, int, int]


def file_key(st: os.stat_result) -> FileKey:
    """What changes whenever a file's content does: inode, size, mtime and ctime."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(st: os.stat_result) -> bool:
    """Whether `st` (taken before a read) is old enough that an unchanged key vouches for an
    unchanged content from now on."""
    return time.time_ns() - st.st_mtime_ns > RACY_WINDOW_NS


def read_text(path: Path) -> str | None:
    """The file's text, or None if it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def write_atomic(path: Path, content: str | bytes, mode: int = 0o600) -> bool:
    """Replace `path` with `content` unless it holds exactly that already; True if written.

    The temp file gets `mode` before it is renamed, so secrets are never readable by others even
    for a moment. On failure (disk full, read-only) the old file stays as it was, the temp file is
    removed, and the OSError propagates.
    """
    data = content.encode() if isinstance(content, str) else content
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o7777 != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            # Name the file meant, not the temp file (or no file: a write to a full disk).
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    return True


def move_aside(path: Path) -> Path | None:
    """Rename an unreadable file to `<name>.corrupt-<timestamp>`; the new path (None if gone)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}{CORRUPT_MARK}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{CORRUPT_MARK}{stamp}-{n}")
    try:
        path.rename(target)
    except FileNotFoundError:
        return None
    log.error("state_file.moved_aside", path=str(path), moved_to=str(target))
    return target


def make_directory(path: Path, mode: int = 0o700) -> bool:
    """Create `path` and any missing parents with `mode`; existing ones are left as they are.

    Never chmods an existing directory: the operator may have made it read-only or changed its
    mode on purpose, and a chmod on every tick fails on a read-only mount. True if created.
    """
    if path.is_dir():
        return False
    missing = [path]
    while not missing[-1].parent.is_dir() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        # mkdir's mode is masked by the umask; the directory is new, so this is its only chmod.
        os.chmod(directory, mode)
    return True
