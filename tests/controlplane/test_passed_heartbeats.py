"""The body guard passes a heartbeat whose bytes it passed before without parsing them again
(controlplane/app.py): the same bytes pass the same checks, and a repeat answered from a kept
look (services/executors.py `kept_sync`) needs only their digest. What does not depend on the
bytes is still checked, and nothing refused is remembered."""

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from nodeplane.controlplane import app as app_module
from nodeplane.controlplane.api.executor_calls import EXECUTOR_BODY_SCOPE_KEY, ExecutorBody
from nodeplane.controlplane.app import GraphQLBodyGuard
from nodeplane.protocol.executor_documents import POLL_SPECS, SYNC_EXECUTOR


def _body(document: str, variables: dict[str, Any]) -> bytes:
    return json.dumps({"query": document, "variables": variables}).encode()


SYNC = _body(
    SYNC_EXECUTOR,
    {"input": {"name": "host-1", "kind": "agent", "version": "1", "capabilities": {}}},
)
POLL = _body(POLL_SPECS, {"known": [], "wait": 0})


class _Sent:
    """What the guard did with one request: the status it answered, or what it handed on."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.carried: ExecutorBody | None = None
        self.handed_on: bytes | None = None


def _through(guard_of: Any, body: bytes, content_type: str = "application/json") -> _Sent:
    seen = _Sent()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.carried = scope.get(EXECUTOR_BODY_SCOPE_KEY)
        seen.handed_on = (await receive())["body"]

    async def go() -> None:
        guard = guard_of(app)
        messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]

        scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": "/graphql",
            "headers": [(b"content-type", content_type.encode())],
        }
        await guard(scope, receive, send)

    asyncio.run(go())
    return seen


def _guard() -> Any:
    """One guard for every request of a test, around each request's own app."""
    holder: dict[str, GraphQLBodyGuard] = {}

    def guard_of(app: Any) -> GraphQLBodyGuard:
        guard = holder.setdefault("guard", GraphQLBodyGuard(app, 1 << 20))
        guard.app = app
        return guard

    return guard_of


def test_a_heartbeat_passed_before_is_handed_on_unparsed_with_the_same_meaning() -> None:
    guard = _guard()
    first, second = _through(guard, SYNC), _through(guard, SYNC)
    assert first.carried is not None and second.carried is not None
    assert first.carried._parsed is not None  # parsed by the guard's checks
    assert second.carried._parsed is None  # passed on its digest alone
    assert second.carried.digest == first.carried.digest
    assert second.carried.operation == first.carried.operation == "syncExecutor"
    assert second.carried.variables == first.carried.variables
    assert second.handed_on == first.handed_on == SYNC


def test_what_the_digest_does_not_cover_is_still_checked_and_refusals_are_not_kept() -> None:
    guard = _guard()
    _through(guard, SYNC)
    assert _through(guard, SYNC, content_type="text/plain").status == 415
    # A poll is parsed each time: its answer needs what it says.
    for _ in range(2):
        carried = _through(guard, POLL).carried
        assert carried is not None and carried._parsed is not None
    nul = SYNC.replace(b'"host-1"', b'"host\\u0000"')
    for _ in range(2):
        assert _through(guard, nul).status == 400


def test_past_its_bound_the_guard_starts_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "MAX_PASSED_SYNCS", 2)
    guard = _guard()
    bodies = [SYNC.replace(b'"version": "1"', f'"version": "{n}"'.encode()) for n in range(3)]
    for body in bodies:
        _through(guard, body)
    # The third was remembered once the first two were forgotten.
    third, first = _through(guard, bodies[2]).carried, _through(guard, bodies[0]).carried
    assert third is not None and third._parsed is None
    assert first is not None and first._parsed is not None
