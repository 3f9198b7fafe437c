"""The access log: a line per HTTP request, but the executors' routine calls (a heartbeat or a
spec poll answered without an error, a few hundred a second from a fleet) only at debug level."""

import asyncio
import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from nodeplane.controlplane.app import AccessLog
from nodeplane.controlplane.logging import configure_logging
from nodeplane.controlplane.metrics.request_labels import OPERATION_SCOPE_KEY


def _request(operation: str, status: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope[OPERATION_SCOPE_KEY] = operation
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": []}
    asyncio.run(AccessLog(app)(scope, receive, send))


def _lines(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str, int]]:
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    return [
        (r["level"], r["path"], r["status"]) for r in records if r.get("event") == "http.request"
    ]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_routine_executor_calls_are_logged_at_debug_and_everything_else_at_info(
    capsys: pytest.CaptureFixture[str], level: str
) -> None:
    configure_logging(level, json_logs=True)
    try:
        for operation, status in [
            ("syncExecutor", 200),
            ("executorSpecs", 200),
            ("syncExecutor", 503),
            ("executorSpecs", 400),
            ("nodes", 200),
            ("", 200),
        ]:
            _request(operation, status)
        routine = [("debug", "/graphql", 200)] * 2 if level == "debug" else []
        others = [("info", "/graphql", s) for s in (503, 400, 200, 200)]
        assert _lines(capsys) == routine + others
    finally:
        configure_logging("info")
