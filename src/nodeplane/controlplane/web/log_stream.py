"""`GET /nodes/{id}/logs/stream`: a node's live log as Server-Sent Events (issue 10).

The browser's Logs tab (signed in by its session cookie) and `nodeplane nodes logs` (a bearer
token: a session token or a personal API key) read the same stream. Query parameters: `role`
(default: the node's first role), `tail` (lines before the live ones, default 200, at most
1,000), `level` (minimum: debug, info, warn, error; default debug), `follow` (`1` default:
keep streaming; `0`: end after the tail).

Events:
- `lines`: `{"lines": [[level, text], …], "dropped": N}`: lines in order; `dropped` counts lines
  left out before them (over the rate limit, or a reader too slow), which the viewer shows as
  "N lines dropped".
- `end`: `{}` when the output ends (a tail without follow), or `{"code", "message"}` when the
  session failed (`logs_unavailable`, `executor_not_answering`, `log_source_failed`, …). The
  stream then closes; a reader should not reconnect.

A request refused before streaming (not signed in, no such node, a bad parameter) is answered
with its HTTP status and `{"error": {"code", "message", "field"}}` — or, for a browser's
EventSource (`Accept: text/event-stream`), which cannot read an error status, as a 200 stream
holding one `end` event with that code. The session ends when the reader goes away.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from nodeplane.controlplane.api.context import SESSION_COOKIE
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.services import logs
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.log_relay import LogViewer, ViewerEvent
from nodeplane.controlplane.web.params import text_problem

log = structlog.get_logger(__name__)

# A comment this often keeps proxies from closing a quiet stream and notices a closed one.
HEARTBEAT_SECONDS = 10.0
# An executor that has said nothing for a session this long after it opened is not answering
# (an older agent, or one stuck): the viewer is told so instead of waiting forever.
ANSWER_TIMEOUT_SECONDS = 15.0

_STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NODE_DELETING: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.LOGS_UNAVAILABLE: 501,
    ErrorCode.EXECUTOR_OFFLINE: 503,
}
_PARAMS = ("role", "tail", "level", "follow")


def _sse(event: str, data: dict[str, Any]) -> bytes:
    # json.dumps escapes newlines, so one data line holds the whole event.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _encode(events: list[ViewerEvent]) -> tuple[bytes, bool]:
    """The stream bytes of `events`, and whether the stream ends with them."""
    out = b""
    for event in events:
        if event.lines or event.dropped:
            out += _sse("lines", {"lines": [list(pair) for pair in event.lines],
                                  "dropped": event.dropped})  # fmt: skip
        if event.error_code:
            return out + _sse("end", {"code": event.error_code, "message": event.error or ""}), True
        if event.done:
            return out + _sse("end", {}), True
    return out, False


async def _principal(db: Database, request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return await authenticate(db, header[7:].strip())
    principal = await authenticate(db, request.cookies.get(SESSION_COOKIE))
    return None if principal is not None and principal.is_executor else principal


def _refusal(request: Request, error: DomainError) -> Response:
    if "text/event-stream" in request.headers.get("accept", ""):
        body = _sse("end", {"code": error.code.value, "message": error.message})
        return Response(body, media_type="text/event-stream", headers={"cache-control": "no-store"})
    return JSONResponse(
        {"error": {"code": error.code.value, "message": error.message, "field": error.field}},
        status_code=_STATUS.get(error.code, 400),
        headers={"cache-control": "no-store"},
    )


async def _events(
    db: Database, viewer: LogViewer, recheck: Callable[[], Awaitable[bytes | None]]
) -> AsyncIterator[bytes]:
    """The stream of one viewer until the output or the session ends, or the reader leaves
    (Starlette cancels this then); the session is closed on every way out."""
    try:
        yield b"retry: 3000\n\n"
        opened = asyncio.get_running_loop().time()
        while True:
            viewer.touch()
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS if viewer.answered else 1.0):
                    await viewer.ready.wait()
            except TimeoutError:
                now = asyncio.get_running_loop().time()
                if not viewer.answered and now - opened >= ANSWER_TIMEOUT_SECONDS:
                    yield _sse(
                        "end",
                        {
                            "code": ErrorCode.EXECUTOR_NOT_ANSWERING.value,
                            "message": "the executor did not answer the log session in "
                            f"{ANSWER_TIMEOUT_SECONDS:g} s",
                        },
                    )
                    return
                if viewer.answered:
                    final = await recheck()
                    if final is not None:
                        yield final
                        return
                    yield b": heartbeat\n\n"
                continue
            chunk, ended = _encode(viewer.take())
            if chunk:
                yield chunk
            if ended or viewer.ended:
                return
    finally:
        db.logs.close_viewer(viewer)


def log_stream_endpoint(db: Database, settings: Settings) -> Any:
    """The route handler of `GET /nodes/{node_id}/logs/stream`."""

    async def stream(request: Request) -> Response:
        principal = await _principal(db, request)
        if principal is None or principal.organization_id is None:
            return _refusal(request, DomainError(ErrorCode.UNAUTHENTICATED, "sign in first"))
        try:
            node_id = UUID(request.path_params["node_id"])
        except ValueError:
            return _refusal(request, DomainError(ErrorCode.NOT_FOUND, "node not found"))
        query = request.query_params
        try:
            for name in query:
                if name not in _PARAMS:
                    raise DomainError(
                        ErrorCode.INVALID_INPUT, f"unknown parameter {name[:40]!r}", field=name
                    )
                if problem := text_problem(query[name], max_chars=100):
                    raise DomainError(ErrorCode.INVALID_INPUT, f"{name} {problem}", field=name)
            role, tail, level = logs.check_request(
                query.get("role") or None, query.get("tail"), query.get("level")
            )
            follow = query.get("follow", "1") not in ("0", "false", "no")
            viewer = await logs.open_view(
                db,
                principal,
                node_id,
                role=role,
                tail=tail,
                level=level,
                follow=follow,
                heartbeat_timeout=settings.heartbeat_timeout,
            )
        except DomainError as error:
            return _refusal(request, error)
        log.info(
            "logs.opened",
            node_id=str(node_id),
            session_id=str(viewer.session_id),
            role=viewer.session.request.role,
            viewer=principal.label,
        )

        async def recheck() -> bytes | None:
            """At each heartbeat: None to go on, else the stream's last bytes. A stream outlives
            the request that opened it: a signed-out session or a revoked key ends it (without
            a word), an executor gone offline ends it with `executor_offline`."""
            if await _principal(db, request) is None:
                return b""
            problem = await logs.executor_problem(
                db, viewer.session.executor_id, settings.heartbeat_timeout
            )
            if problem is not None:
                return _sse("end", {"code": problem.code.value, "message": problem.message})
            return None

        return StreamingResponse(
            _events(db, viewer, recheck),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return stream
