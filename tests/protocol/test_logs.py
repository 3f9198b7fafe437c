"""Log levels, line cleaning and the log-session wire types (pure)."""

import uuid

import pytest
from pydantic import ValidationError

from nodeplane.protocol.logs import (
    MAX_CHUNK_LINES,
    MAX_LOG_LINE_CHARS,
    MAX_LOG_TAIL,
    LogChunk,
    LogLevel,
    LogLine,
    LogSessionRequest,
    at_least,
    clean_line,
    level_from_word,
    parse_level,
    role_problem,
)


@pytest.mark.parametrize(
    ("word", "level"),
    [
        ("warning", LogLevel.WARN),
        ("WARN", LogLevel.WARN),
        ("Warn", LogLevel.WARN),
        ("WRN", LogLevel.WARN),
        ("ERRO", LogLevel.ERROR),
        ("CRIT", LogLevel.ERROR),
        ("fatal", LogLevel.ERROR),
        ("DEBG", LogLevel.DEBUG),
        ("trace", LogLevel.DEBUG),
        ("verbose", LogLevel.DEBUG),
        ("INFO", LogLevel.INFO),
        ("notice", LogLevel.INFO),
        ("loud", None),
        ("", None),
    ],
)
def test_level_words(word: str, level: LogLevel | None) -> None:
    assert level_from_word(word) == level


@pytest.mark.parametrize(
    ("level", "minimum", "kept"),
    [
        (LogLevel.DEBUG, LogLevel.DEBUG, True),
        (LogLevel.DEBUG, LogLevel.INFO, False),
        (LogLevel.INFO, LogLevel.INFO, True),
        (LogLevel.INFO, LogLevel.WARN, False),
        (LogLevel.WARN, LogLevel.INFO, True),
        (LogLevel.ERROR, LogLevel.WARN, True),
        (LogLevel.WARN, LogLevel.ERROR, False),
    ],
)
def test_minimum_level(level: LogLevel, minimum: LogLevel, kept: bool) -> None:
    assert at_least(level, minimum) is kept


def test_parse_level_refuses_long_or_unknown_words() -> None:
    assert parse_level("warning") is LogLevel.WARN
    assert parse_level("x" * 40) is None
    assert parse_level("loud") is None


@pytest.mark.parametrize(
    ("role", "ok"),
    [("node", True), ("execution", True), ("a-1", True), ("", False), ("Node", False),
     ("../etc", False), ("node;rm -rf", False), ("n" * 40, False), ("-x", False)],
)  # fmt: skip
def test_role_names(role: str, ok: bool) -> None:
    assert (role_problem(role) is None) is ok


def test_clean_line_strips_colours_and_controls_and_clips() -> None:
    assert clean_line("\x1b[33mWARN\x1b[0m [x] y\r\n") == "WARN [x] y"
    assert clean_line("a\x00b\x07c\td") == "a\ufffdb\ufffdc\td"
    assert clean_line("a\ud800b") == "a?b"
    long = clean_line("x" * (MAX_LOG_LINE_CHARS + 500))
    assert len(long) == MAX_LOG_LINE_CHARS and long.endswith("[truncated]")


def test_wire_bounds() -> None:
    sid, nid = uuid.uuid4(), uuid.uuid4()
    request = LogSessionRequest(session_id=sid, node_id=nid, role="node")
    assert request.tail == 200 and request.level is LogLevel.DEBUG and request.follow
    assert LogSessionRequest.model_validate(request.to_wire()) == request
    with pytest.raises(ValidationError):
        LogSessionRequest(session_id=sid, node_id=nid, role="node", tail=MAX_LOG_TAIL + 1)
    with pytest.raises(ValidationError):
        LogSessionRequest(session_id=sid, node_id=nid, role="../x")
    line = LogLine(level=LogLevel.INFO, text="hello")
    with pytest.raises(ValidationError):
        LogChunk(session_id=sid, lines=[line] * (MAX_CHUNK_LINES + 1))
    with pytest.raises(ValidationError):
        LogLine(level=LogLevel.INFO, text="a\x00b")
    with pytest.raises(ValidationError):
        LogChunk(session_id=sid, error_code="Not A Code")
    with pytest.raises(ValidationError):
        LogChunk.model_validate({"sessionId": str(sid), "extra": 1})
