"""Live logs: levels, the log-session wire types and their bounds (issue 10).

A viewer asks the control plane for a node's logs; the control plane opens a log session for the
owning executor, which learns of it on its own long-poll (`executorLogSessions`), tails the
process's output, keeps the lines at or above the session's minimum level and posts them back in
chunks (`postLogChunk`). The control plane fans the chunks out to the viewer and stores none.

Everything here is pure: the level words each client prints are mapped to `LogLevel` by the chain
adapters (nodeplane.chains.log_levels) with `level_from_word`.
"""

import re
import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from nodeplane.protocol.spec import IDENTIFIER_PATTERN
from nodeplane.protocol.text import StorableText
from nodeplane.protocol.wire import WireModel

DEFAULT_LOG_TAIL = 200
MAX_LOG_TAIL = 1000
# A longer line is cut here and marked: one line never makes a chunk too big to deliver.
MAX_LOG_LINE_CHARS = 2000
MAX_CHUNK_LINES = 200
# The JSON of a chunk's lines stays under this, so the control plane can pass it between its
# processes in one PostgreSQL NOTIFY (whose payload must be under 8,000 bytes).
MAX_CHUNK_BYTES = 6000
# Lines a session delivers per second at most; past that the executor drops lines and says how
# many ("N lines dropped") instead of buffering without bound.
MAX_LINES_PER_SECOND = 200
MAX_LOG_VIEWERS_PER_NODE = 8
MAX_LOG_SESSIONS_PER_POLL = 256
# The error codes a log session can end with (besides the API's own).
LOGS_UNAVAILABLE_CODE = "logs_unavailable"
EXECUTOR_NOT_ANSWERING_CODE = "executor_not_answering"
EXECUTOR_OFFLINE_CODE = "executor_offline"
LOG_SOURCE_FAILED_CODE = "log_source_failed"
TRUNCATED_MARK = " …[truncated]"

RoleName = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=63)]
_ROLE = re.compile(IDENTIFIER_PATTERN)


class LogLevel(StrEnum):
    """A log line's severity, after normalizing the client's own word for it."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


_RANK = {LogLevel.DEBUG: 0, LogLevel.INFO: 1, LogLevel.WARN: 2, LogLevel.ERROR: 3}

# The words clients print for their levels, lower-cased: Bitcoin Core's `warning`, geth's and
# lighthouse's `WARN`, slog's `DEBG`/`ERRO`/`CRIT`, tracing's `TRACE`, logfmt's `level=…`.
_WORDS: dict[str, LogLevel] = {
    "trace": LogLevel.DEBUG,
    "trce": LogLevel.DEBUG,
    "debug": LogLevel.DEBUG,
    "debg": LogLevel.DEBUG,
    "dbug": LogLevel.DEBUG,
    "dbg": LogLevel.DEBUG,
    "verbose": LogLevel.DEBUG,
    "info": LogLevel.INFO,
    "inf": LogLevel.INFO,
    "notice": LogLevel.INFO,
    "warn": LogLevel.WARN,
    "warning": LogLevel.WARN,
    "wrn": LogLevel.WARN,
    "error": LogLevel.ERROR,
    "erro": LogLevel.ERROR,
    "err": LogLevel.ERROR,
    "eror": LogLevel.ERROR,
    "crit": LogLevel.ERROR,
    "critical": LogLevel.ERROR,
    "fatal": LogLevel.ERROR,
    "fatl": LogLevel.ERROR,
    "panic": LogLevel.ERROR,
}


def level_from_word(word: str) -> LogLevel | None:
    """The level a client's level word means (any case), None if it is not one."""
    return _WORDS.get(word.strip().lower())


def at_least(level: LogLevel, minimum: LogLevel) -> bool:
    """True when `level` is as severe as `minimum` or more."""
    return _RANK[level] >= _RANK[minimum]


def parse_level(raw: str) -> LogLevel | None:
    """A minimum level as a user types it (`warn`, `WARNING`, `error`…), None if unknown."""
    return level_from_word(raw) if len(raw) <= 16 else None


def role_problem(role: str) -> str | None:
    """Why `role` cannot name a node's process, None when it can."""
    if not role or len(role) > 63 or not _ROLE.match(role):
        return "must be a role name (lower-case letters, digits and '-')"
    return None


# Terminal colour and cursor sequences (geth and lighthouse colour their levels on a terminal).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean_line(raw: str) -> str:
    """The line as sent: colour codes removed, other control characters (NUL included) and
    unpaired surrogates replaced, at most MAX_LOG_LINE_CHARS (a longer one cut and marked)."""
    text = _CONTROL.sub("\ufffd", _ANSI.sub("", raw.rstrip("\r\n")))
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) <= MAX_LOG_LINE_CHARS:
        return text
    return text[: MAX_LOG_LINE_CHARS - len(TRUNCATED_MARK)] + TRUNCATED_MARK


class LogSessionRequest(WireModel):
    """A log session the executor is asked to serve: which process, how much, how severe."""

    session_id: uuid.UUID
    node_id: uuid.UUID
    role: RoleName
    tail: int = Field(default=DEFAULT_LOG_TAIL, ge=0, le=MAX_LOG_TAIL)
    level: LogLevel = LogLevel.DEBUG
    follow: bool = True


class LogLine(WireModel):
    """One line of a process's output with its normalized level."""

    level: LogLevel
    text: StorableText = Field(max_length=MAX_LOG_LINE_CHARS)


class LogChunk(WireModel):
    """Lines of one session, posted by the executor. `dropped`: lines left out (over the rate)
    before these; `done`: the session's output ends here (a tail without follow); `error_code`
    and `error`: why the executor cannot serve the session (it ends)."""

    session_id: uuid.UUID
    lines: list[LogLine] = Field(default_factory=list, max_length=MAX_CHUNK_LINES)
    dropped: int = Field(default=0, ge=0, le=1_000_000_000)
    done: bool = False
    error_code: str | None = Field(default=None, max_length=64, pattern=r"^[a-z_]+$")
    error: StorableText | None = Field(default=None, max_length=1000)
