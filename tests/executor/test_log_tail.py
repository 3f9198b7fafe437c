"""Tailing a log file for a live-log session (real files): the initial tail, following,
partial lines, a replaced or truncated file, a missing one; levels and chunk bounds."""

import json
import os
from pathlib import Path

from nodeplane.chains.log_levels import level_parser
from nodeplane.executor.runtime.log_sessions import chunks_of
from nodeplane.executor.runtime.log_tail import LevelFilter, LogFileTail
from nodeplane.protocol.logs import (
    MAX_CHUNK_BYTES,
    MAX_CHUNK_LINES,
    MAX_LOG_LINE_CHARS,
    LogLevel,
    LogLine,
)

T = "2026-12-03T17:57:41Z"


def tail_of(path: Path, minimum: LogLevel = LogLevel.DEBUG) -> LogFileTail:
    return LogFileTail(path, LevelFilter(level_parser("litecoind"), minimum))


def texts(lines: list[LogLine]) -> list[str]:
    return [line.text for line in lines]


def test_initial_tail_keeps_the_last_lines_at_or_above_the_level(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text(
        f"{T} one\n{T} [net] debug two\n{T} Warning: three\n{T} four\n{T} ERROR: five\n"
    )
    assert texts(tail_of(path).initial(2)) == [f"{T} four", f"{T} ERROR: five"]
    assert texts(tail_of(path, LogLevel.INFO).initial(10)) == [
        f"{T} one", f"{T} Warning: three", f"{T} four", f"{T} ERROR: five",
    ]  # fmt: skip
    warn = tail_of(path, LogLevel.WARN).initial(10)
    assert [(line.level, line.text) for line in warn] == [
        (LogLevel.WARN, f"{T} Warning: three"),
        (LogLevel.ERROR, f"{T} ERROR: five"),
    ]
    assert tail_of(path).initial(0) == []


def test_following_reads_complete_lines_only_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    tail = tail_of(path)
    assert tail.initial(10) == []  # not there yet: the process has not started
    assert tail.read_new() == ([], False)
    path.write_text("first\nsecond without newline")
    assert texts(tail.read_new()[0]) == ["first"]
    with path.open("a") as f:
        f.write(" yet\nthird\n")
    assert texts(tail.read_new()[0]) == ["second without newline yet", "third"]
    assert tail.read_new() == ([], False)
    # Truncated (copytruncate rotation): read again from the start.
    path.write_text("after truncate\n")
    assert texts(tail.read_new()[0]) == ["after truncate"]
    # Replaced by another file (rename rotation): the new one from its start.
    os.replace(path, tmp_path / "node.log.1")
    path.write_text("new file\n")
    assert texts(tail.read_new()[0]) == ["new file"]


def test_continuation_lines_take_their_predecessors_level(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text(f"{T} ERROR: boom\n    at frame 1\n{T} fine\n")
    lines = tail_of(path, LogLevel.ERROR).initial(10)
    assert texts(lines) == [f"{T} ERROR: boom", "    at frame 1"]


def test_lines_are_cleaned_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_bytes(b"\x1b[31mred\x1b[0m \x00nul \xff\xfe bad utf-8\n" + b"x" * 10_000 + b"\n")
    first, long = tail_of(path).initial(10)
    assert first.text == "red \ufffdnul \ufffd\ufffd bad utf-8"
    assert len(long.text) == MAX_LOG_LINE_CHARS and long.text.endswith("[truncated]")


def test_chunks_stay_within_the_protocols_bounds() -> None:
    many = [LogLine(level=LogLevel.INFO, text=f"line {i}") for i in range(450)]
    assert [len(c) for c in chunks_of(many)] == [MAX_CHUNK_LINES, MAX_CHUNK_LINES, 50]
    wide = [LogLine(level=LogLevel.INFO, text="é" * 1999) for _ in range(20)]
    for chunk in chunks_of(wide):
        size = sum(len(json.dumps(line.text, ensure_ascii=False).encode()) for line in chunk)
        assert size <= MAX_CHUNK_BYTES
    assert sum(len(c) for c in chunks_of(wide)) == 20
    assert chunks_of([]) == []
