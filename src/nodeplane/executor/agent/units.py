"""Render a systemd unit file from a UnitSpec: pure, no I/O.

Everything that comes from a spec is quoted so systemd reads back exactly the words we meant
(DESIGN §7): `ExecStart=` and `Environment=` words are double-quoted with `\\` and `"` escaped;
`%` is doubled everywhere (systemd expands specifiers before it parses a line); `$` is doubled in
`ExecStart=` only (systemd expands variables there, never in `Environment=`). Control characters
and line breaks are refused outright: no value can start a new line or a new setting.

Crash loops end in `failed` (StartLimitBurst=/StartLimitIntervalSec=, the rule in driver.py), and
every end of the main process appends an exit line to the unit's log (`ExecStopPost=`, exits.py):
systemd forgets the exit status once the unit restarts, the agent reads it there.
"""

import math
import re
import signal
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from nodeplane.executor.agent.driver import (
    CRASH_LOOP_BURST,
    DriverError,
    Stamp,
    UnitSpec,
    check_unit_name,
)
from nodeplane.executor.agent.exits import EXIT_LINE_TEMPLATE
from nodeplane.protocol import RestartPolicy

# systemd ignores keys starting with X- in any section: the agent's stamp lives there.
STAMP_REVISION = "X-Nodeplane-Revision"
STAMP_RESTART_GENERATION = "X-Nodeplane-Restart-Generation"
STAMP_PENDING_RESTART = "X-Nodeplane-Pending-Restart"
# systemd reads at most LONG_LINE_MAX (1 MiB) per line; stay well clear of it.
MAX_LINE_BYTES = 256 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Paths in unquoted settings (WorkingDirectory=, StandardOutput=append:) under these directories
# would be hidden from the service by PrivateTmp=yes.
_TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))
# The exit line, filled in by systemd from what it gives ExecStopPost= (systemd.exec(5)); `-`:
# a failing echo never fails the unit. A fixed text: `$` is left for systemd to expand here.
EXIT_LINE_COMMAND = 'ExecStopPost=-/bin/echo "{}"'.format(
    EXIT_LINE_TEMPLATE.format(
        result="${SERVICE_RESULT}", kind="${EXIT_CODE}", status="${EXIT_STATUS}"
    )
)


class UnitRenderError(DriverError, ValueError):
    """A value cannot be written into a unit file safely (both drivers refuse it on install)."""


def _check_text(what: str, value: str) -> None:
    """Refuse control characters (newlines above all) and text that is not valid Unicode."""
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise UnitRenderError(f"{what}: control character {ch!r} is not allowed")
        # Line and paragraph separators are not line breaks to systemd, but they are to many
        # tools that read unit files; lone surrogates cannot be encoded as UTF-8 at all.
        if ch in "\u2028\u2029" or unicodedata.category(ch) == "Cs":
            raise UnitRenderError(f"{what}: character {ch!r} is not allowed")


def _escape_quoted(value: str) -> str:
    """Escape for the inside of a double-quoted systemd word (before specifier expansion)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def quote_exec_word(word: str) -> str:
    """One `ExecStart=` word: systemd gives the process exactly `word` as an argument."""
    _check_text("argument", word)
    return '"' + _escape_quoted(word).replace("$", "$$") + '"'


def quote_env_assignment(key: str, value: str) -> str:
    """One `Environment=` word, `"KEY=value"`; systemd does no `$` expansion there."""
    if not _ENV_NAME.fullmatch(key):
        raise UnitRenderError(f"environment name {key[:40]!r} is not a valid variable name")
    _check_text(f"environment {key}", value)
    return '"' + _escape_quoted(f"{key}={value}") + '"'


def _plain_value(what: str, value: str) -> str:
    """A value written unquoted (Description=, paths): systemd only expands `%` specifiers there.

    The parser strips surrounding whitespace and joins a line ending in a backslash with the next
    one, so both are refused.
    """
    _check_text(what, value)
    if value != value.strip() or value.endswith("\\"):
        raise UnitRenderError(f"{what}: {value[:80]!r} may not start or end with blanks or '\\'")
    return value.replace("%", "%%")


def _path_value(what: str, path: Path) -> str:
    if not path.is_absolute() or ".." in path.parts:
        # systemd refuses paths that are not absolute and normalized.
        raise UnitRenderError(f"{what}: {str(path)[:80]!r} is not an absolute, normalized path")
    return _plain_value(what, str(path))


def signal_name(value: str) -> str:
    """`SIGTERM` for "SIGTERM", "TERM" or "15"; UnitRenderError for anything else."""
    text = value.upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text)).name
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"].name
    except (KeyError, ValueError):
        raise UnitRenderError(f"{value[:40]!r} is not a signal") from None


def _seconds(value: float) -> str:
    """A systemd time span: whole seconds, or milliseconds so fractions survive."""
    if not math.isfinite(value) or value < 0:
        raise UnitRenderError(f"{value!r} is not a duration")
    ms = round(value * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _cpu_quota(cores: float) -> str:
    if not math.isfinite(cores) or cores <= 0:
        raise UnitRenderError(f"cpu limit {cores!r} must be a positive number of cores")
    return f"{max(1, round(cores * 100))}%"


def _memory_max(limit: int) -> str:
    if limit <= 0:
        raise UnitRenderError(f"memory limit {limit!r} must be a positive number of bytes")
    return str(limit)


def _uses_host_tmp(unit: UnitSpec) -> bool:
    """True when the process is given a path under /tmp or /var/tmp.

    PrivateTmp=yes would give it an empty /tmp of its own, hiding those files (test machines keep
    whole data directories there), so hardening yields to function in that case.
    """
    plan = unit.process
    if any(plan.working_dir.is_relative_to(d) for d in _TMP_DIRS):
        return True
    values: Iterable[str] = (*plan.argv, *plan.env.values())
    return any(f"{d}/" in v or v == str(d) for v in values for d in _TMP_DIRS)


def render_unit(unit: UnitSpec) -> str:
    """The unit file text for `unit`; UnitRenderError if any value cannot be written safely."""
    try:
        check_unit_name(unit.name)
    except ValueError as exc:
        raise UnitRenderError(str(exc)) from None
    for what, ident in (("node", unit.node), ("role", unit.role)):
        if not _IDENTIFIER.fullmatch(ident):
            raise UnitRenderError(f"{what} {ident[:40]!r} is not a valid identifier")
    plan = unit.process
    if not plan.argv:
        raise UnitRenderError("the process has no command line")
    if not plan.argv[0].startswith("/"):
        # An absolute executable also keeps systemd from reading a leading -, @, :, + or ! as a
        # prefix flag (it checks the first word after unquoting).
        raise UnitRenderError(f"executable {plan.argv[0][:80]!r} is not an absolute path")
    try:
        restart = RestartPolicy(unit.restart_policy)
    except ValueError:
        raise UnitRenderError(f"unknown restart policy {unit.restart_policy!r}") from None
    if plan.stop_timeout_s <= 0:
        raise UnitRenderError("stop timeout must be positive")

    description = _plain_value(
        "description", f"nodeplane {unit.node} {unit.role} ({plan.client} {plan.version})"
    )
    service = [
        "Type=simple",
        "ExecStart=" + " ".join(quote_exec_word(w) for w in plan.argv),
        "WorkingDirectory=" + _path_value("working directory", plan.working_dir),
    ]
    service += ["Environment=" + quote_env_assignment(k, v) for k, v in sorted(plan.env.items())]
    service += [
        f"Restart={restart.value}",
        f"RestartSec={_seconds(unit.restart_delay_s)}",
        f"KillSignal={signal_name(plan.stop_signal)}",
        f"TimeoutStopSec={_seconds(plan.stop_timeout_s)}",
        EXIT_LINE_COMMAND,
        # Accounting feeds status(): CPU and memory per unit.
        "CPUAccounting=yes",
        "MemoryAccounting=yes",
    ]
    if unit.cpu_limit is not None:
        service.append(f"CPUQuota={_cpu_quota(unit.cpu_limit)}")
    if unit.memory_limit_bytes is not None:
        service.append(f"MemoryMax={_memory_max(unit.memory_limit_bytes)}")
    service.append("NoNewPrivileges=yes")
    if not _uses_host_tmp(unit):
        service.append("PrivateTmp=yes")
    if unit.log_file is None:
        service += ["StandardOutput=journal", "StandardError=journal"]
    else:
        log = _path_value("log file", unit.log_file)
        service += [f"StandardOutput=append:{log}", f"StandardError=append:{log}"]

    # Room for CRASH_LOOP_BURST quick runs, each up to the stable window plus the restart delay:
    # a longer run between them is not a crash loop.
    start_limit = CRASH_LOOP_BURST * (unit.restart_delay_s + unit.stable_after_s)
    stamp: list[str] = []
    if unit.stamp is not None:
        stamp = [
            f"{STAMP_REVISION}={int(unit.stamp.revision)}",
            f"{STAMP_RESTART_GENERATION}={int(unit.stamp.restart_generation)}",
        ]
        if unit.stamp.pending_restart:
            stamp.append(f"{STAMP_PENDING_RESTART}=yes")
    lines = [
        "# Written by the nodeplane agent; changes here are overwritten.",
        "[Unit]",
        f"Description={description}",
        f"StartLimitIntervalSec={_seconds(start_limit)}",
        f"StartLimitBurst={CRASH_LOOP_BURST}",
        *stamp,
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    text = "\n".join(lines)
    if any(len(line.encode()) > MAX_LINE_BYTES for line in lines):
        raise UnitRenderError(f"a line of the unit is longer than {MAX_LINE_BYTES} bytes")
    return text


def parse_stamp(text: str) -> Stamp | None:
    """The stamp in a unit file's text; None if it has none (or a garbled one)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in (STAMP_REVISION, STAMP_RESTART_GENERATION, STAMP_PENDING_RESTART):
            values[key] = value.strip()
    try:
        return Stamp(
            revision=int(values[STAMP_REVISION]),
            restart_generation=int(values[STAMP_RESTART_GENERATION]),
            pending_restart=values.get(STAMP_PENDING_RESTART) == "yes",
        )
    except (KeyError, ValueError):
        return None
