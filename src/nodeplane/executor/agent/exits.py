"""How a unit's process ended, in words, and what it printed before it did.

Both drivers append one exit line to the unit's log file each time its main process ends:
systemd through `ExecStopPost=` (units.py), the built-in supervisor itself. systemd forgets a
process's exit status as soon as the unit starts again, so after an automatic restart that line
is the only record of why the previous run ended; it also marks where each run's output ends.
"""

import re
import signal
import unicodedata
from dataclasses import dataclass
from pathlib import Path

EXIT_LINE_PREFIX = "nodeplane: exit "
# What systemd gives ExecStopPost= (systemd.exec(5)): the unit's result, how the main process
# ended (exited, killed, dumped) and its exit status or signal name.
EXIT_LINE_TEMPLATE = EXIT_LINE_PREFIX + "result={result} code={kind} status={status}"
_EXIT_LINE = re.compile(r"nodeplane: exit result=(\S*) code=(\S*) status=(\S*)")

TAIL_BYTES = 16 * 1024  # how much of a log's end is read: bounded, whatever the log's size
TAIL_LINES = 5
# Lines worth showing first: what clients print when they give up.
_ERRORISH = re.compile(r"error|fatal|panic|failed|cannot|can't|unable|denied|too low", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# ISO timestamps that clients (Bitcoin Core and descendants) put before every line.
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z?\s+")


@dataclass(frozen=True)
class ProcessExit:
    """How a main process ended: its unit's result, and an exit code or a signal number."""

    result: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    core_dumped: bool = False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_line(result: str, exit_code: int | None, exit_signal: int | None) -> str:
    """The exit line the built-in supervisor appends to a unit's log (the same as systemd's)."""
    if exit_signal is not None:
        kind, status = "killed", _signal_name(exit_signal).removeprefix("SIG")
    elif exit_code is not None:
        kind, status = "exited", str(exit_code)
    else:
        kind = status = ""
    return EXIT_LINE_TEMPLATE.format(result=result, kind=kind, status=status)


def parse_exit_line(line: str) -> ProcessExit | None:
    """The exit an exit line records, or None if `line` is not one."""
    match = _EXIT_LINE.search(line)
    if match is None:
        return None
    result, kind, status = match.groups()
    code = sig = None
    if kind == "exited" and status.isdigit():
        code = int(status)
    elif kind in ("killed", "dumped") and status:
        sig = _parse_signal(status)
    return ProcessExit(result or None, code, sig, core_dumped=kind == "dumped")


def _parse_signal(status: str) -> int | None:
    if status.isdigit():
        return int(status)
    try:
        return int(signal.Signals[status if status.startswith("SIG") else f"SIG{status}"])
    except KeyError:
        return None


_RESULT_TEXTS = {
    "timeout": "timed out",
    "start-limit-hit": "started too often",
    "core-dump": "dumped core",
    "watchdog": "watchdog timeout",
    "oom-kill": "killed for lack of memory",
    "resources": "could not get its resources",
}


def exit_text(exit: ProcessExit | None) -> str:
    """'exited with code 1', 'exited (killed by SIGKILL)', or the result in words."""
    if exit is not None and exit.exit_signal is not None:
        dumped = ", core dumped" if exit.core_dumped else ""
        return f"exited (killed by {_signal_name(exit.exit_signal)}{dumped})"
    if exit is not None and exit.exit_code is not None:
        return f"exited with code {exit.exit_code}"
    result = exit.result if exit is not None else None
    if result in (None, "", "unknown"):
        return "exited (unknown)"
    return f"exited ({_RESULT_TEXTS.get(result, result)})"


def clean_line(line: str) -> str:
    """A log line without terminal escapes or control characters (tabs become spaces)."""
    line = _ANSI.sub("", line).replace("\t", " ")
    return "".join(ch for ch in line if unicodedata.category(ch) != "Cc").strip()


def read_tail(path: Path, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The non-empty lines of the last `max_bytes` of `path`, cleaned; [] if it is unreadable."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is cut
    return [cleaned for line in lines if (cleaned := clean_line(line))]


@dataclass(frozen=True)
class LastRun:
    """What a log's tail says of the run that ended last: how it ended and what it printed."""

    exit: ProcessExit | None
    output: list[str]


def last_run(lines: list[str]) -> LastRun:
    """The last exit line in `lines`, and the output between it and the exit line before it.

    Without an exit line (a process still on its first run, a log older than exit lines), the
    whole tail is the output.
    """
    ends = [i for i, line in enumerate(lines) if line.startswith(EXIT_LINE_PREFIX)]
    if not ends:
        return LastRun(None, lines)
    last = ends[-1]
    start = ends[-2] + 1 if len(ends) > 1 else 0
    return LastRun(parse_exit_line(lines[last]), lines[start:last])


def output_excerpt(output: list[str], count: int = TAIL_LINES) -> str:
    """The last `count` lines that look like errors (else the last `count` lines), joined.

    Timestamps are dropped and repeats folded: a client often logs an error and prints it again.
    """
    seen: set[str] = set()
    texts: list[str] = []
    for line in output:
        text = _TIMESTAMP.sub("", line)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    errors = [t for t in texts if _ERRORISH.search(t)]
    return " | ".join((errors or texts)[-count:])
