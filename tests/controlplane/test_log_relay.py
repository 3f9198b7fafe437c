"""The log relay's pure parts: messages under PostgreSQL's NOTIFY limit, and a viewer's bounds."""

import uuid

from nodeplane.controlplane.store.log_relay import (
    MAX_PAYLOAD_BYTES,
    MAX_VIEWER_BACKLOG,
    RELAY_LINES_PER_SECOND,
    LogViewer,
    OpenSession,
    ViewerEvent,
    _parse_chunk,
    chunk_messages,
)
from nodeplane.protocol.logs import (
    MAX_CHUNK_LINES,
    MAX_LOG_LINE_CHARS,
    MAX_LOG_TAIL,
    LogChunk,
    LogLevel,
    LogLine,
    LogSessionRequest,
)


def _body(message: str) -> ViewerEvent:
    event = _parse_chunk(message.split("|", 3)[3])
    assert event is not None
    return event


def test_a_full_chunk_of_the_widest_lines_fits_notify_messages_and_round_trips() -> None:
    text = "\u00e9\U0001f600" * (MAX_LOG_LINE_CHARS // 2)  # 2- and 4-byte characters
    lines = [LogLine(level=LogLevel.WARN, text=text)] * MAX_CHUNK_LINES
    chunk = LogChunk(session_id=uuid.uuid4(), lines=lines, dropped=7, done=True)
    messages = chunk_messages("abcd1234", chunk)
    assert all(len(m.encode()) < MAX_PAYLOAD_BYTES for m in messages)
    events = [_body(m) for m in messages]
    assert sum(len(e.lines) for e in events) == MAX_CHUNK_LINES
    assert [e.dropped for e in events] == [7] + [0] * (len(events) - 1)
    assert [e.done for e in events] == [False] * (len(events) - 1) + [True]
    assert all(level == "warn" and t.startswith("\u00e9") for e in events for level, t in e.lines)


def test_an_error_and_markup_travel_as_data() -> None:
    chunk = LogChunk(
        session_id=uuid.uuid4(),
        lines=[LogLine(level=LogLevel.INFO, text='a|k|b "<script>"\\')],
        error_code="logs_unavailable",
        error='no "logs" | here',
    )
    (message,) = chunk_messages("o", chunk)
    event = _body(message)
    assert event.lines == (("info", 'a|k|b "<script>"\\'),)
    assert (event.error_code, event.error) == ("logs_unavailable", 'no "logs" | here')


def _viewer() -> LogViewer:
    request = LogSessionRequest(session_id=uuid.uuid4(), node_id=uuid.uuid4(), role="node")
    return LogViewer(OpenSession(request, uuid.uuid4(), uuid.uuid4()))


def test_a_viewer_takes_the_whole_tail_then_at_most_its_rate() -> None:
    viewer = _viewer()
    line = ("info", "x")
    for _ in range(MAX_LOG_TAIL // 200):
        viewer.push(ViewerEvent(lines=(line,) * 200))
    taken = viewer.take()
    assert sum(len(e.lines) for e in taken) == MAX_LOG_TAIL and not any(e.dropped for e in taken)
    viewer.push(ViewerEvent(lines=(line,) * (2 * RELAY_LINES_PER_SECOND)))
    viewer.push(ViewerEvent(lines=(("warn", "next"),)))
    taken = viewer.take()
    kept = sum(len(e.lines) for e in taken)
    dropped = sum(e.dropped for e in taken)
    assert kept + dropped == 2 * RELAY_LINES_PER_SECOND + 1
    assert RELAY_LINES_PER_SECOND <= dropped <= RELAY_LINES_PER_SECOND + 5


def test_a_viewer_that_does_not_read_keeps_a_bounded_backlog_and_counts_the_rest() -> None:
    viewer = _viewer()
    for i in range(MAX_VIEWER_BACKLOG + 10):
        viewer.push(ViewerEvent(lines=(("info", f"line {i}"),)))
    taken = viewer.take()
    assert len(taken) == MAX_VIEWER_BACKLOG
    assert sum(e.dropped for e in taken) == 10
    assert taken[-1].lines == (("info", f"line {MAX_VIEWER_BACKLOG + 9}"),)
