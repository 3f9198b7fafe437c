"""`nodeplane nodes logs` through a real server, with a protocol-level executor serving the
session: the tail printed as written (or as JSON), dropped lines counted on stderr, typed
refusals and usage errors."""

import json
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from nodeplane.protocol import ExecutorKind
from nodeplane.protocol.logs import LogChunk, LogLevel, LogLine
from tests.cli.conftest import Cli, deploy
from tests.support.fleet import FakeExecutor, Org


def serve_once(executor: FakeExecutor, *lines: LogLine, dropped: int = 0) -> Any:
    """Wait for the CLI's session and answer it with `lines`, then end it (a tail)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sessions = executor.log_sessions([], wait=5)
        if sessions:
            (session,) = sessions
            executor.post_log_chunk(
                LogChunk(
                    session_id=session.session_id, lines=list(lines), dropped=dropped, done=True
                )
            )
            return session
    raise AssertionError("no log session opened")


def test_a_tail_is_printed_as_written(
    cli: Cli,
    org: Org,
    executor: FakeExecutor,
    background: Callable[[Callable[[], Any]], Future[Any]],
) -> None:
    deploy(org, executor, "ltc-logs")
    lines = [
        LogLine(level=LogLevel.INFO, text="2026-12-03T17:57:41Z UpdateTip: [markup] $(whoami)"),
        LogLine(level=LogLevel.WARN, text="2026-12-03T17:57:41Z Warning: low disk"),
    ]
    served = background(lambda: serve_once(executor, *lines, dropped=3))
    result = cli("nodes", "logs", "ltc-logs", "--tail", "20", "--level", "info")
    session = served.result(timeout=30)
    assert (session.tail, session.level, session.follow) == (20, LogLevel.INFO, False)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [line.text for line in lines]
    assert "[3 lines dropped]" in result.stderr

    served = background(lambda: serve_once(executor, *lines))
    result = cli("nodes", "logs", "ltc-logs", "-o", "json")
    assert served.result(timeout=30).tail == 200
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"level": "info", "text": lines[0].text},
        {"level": "warn", "text": lines[1].text},
    ]


def test_refusals_are_typed_and_bad_flags_are_usage_errors(
    cli: Cli, org: Org, executor: FakeExecutor
) -> None:
    deploy(org, executor, "ltc-logs")
    for args in (["--tail", "5000"], ["--level", "loud"], ["--tail", "-1"]):
        result = cli("nodes", "logs", "ltc-logs", *args)
        assert result.code == 2, (args, result.stderr)
    result = cli("nodes", "logs", "ltc-logs", "--role", "consensus")
    assert result.code == 1 and "(invalid_input)" in result.said and "no role" in result.said

    operator = FakeExecutor(org.base_url, org.executor_key("op"), kind=ExecutorKind.OPERATOR)
    operator.sync()
    deploy(org, operator, "ltc-k8s")
    result = cli("nodes", "logs", "ltc-k8s", "--executor", operator.name)
    assert result.code == 1
    assert "logs are not available for operator executors" in result.said
    assert "(logs_unavailable)" in result.said
