"""The control-plane ASGI application: GraphQL, health, request limits and background sweeps."""

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nodeplane.controlplane.api.executor_calls import (
    EXECUTOR_BODY_SCOPE_KEY,
    POLL,
    SYNC,
    ExecutorBody,
    executor_operation,
)
from nodeplane.controlplane.api.schema import GraphQLApp
from nodeplane.controlplane.auth.passwords import shutdown_password_workers
from nodeplane.controlplane.config import EventRetention, Settings
from nodeplane.controlplane.errors import ErrorCode
from nodeplane.controlplane.gc_policy import FullCollections, settle_after_startup
from nodeplane.controlplane.metrics.endpoint import (
    METRICS_PATH,
    MetricsEndpoint,
    MetricsListener,
    token_problem,
)
from nodeplane.controlplane.metrics.request_labels import OPERATION_SCOPE_KEY, RouteTemplates
from nodeplane.controlplane.metrics.request_metrics import RequestMetrics
from nodeplane.controlplane.request_body import replay_body
from nodeplane.controlplane.services.account_sweep import sweep_account_records
from nodeplane.controlplane.services.accounts import bootstrap_admin
from nodeplane.controlplane.services.alerts import sweep_alerts
from nodeplane.controlplane.services.event_retention import prune_events
from nodeplane.controlplane.services.executors import (
    sweep_instance_refusals,
    sweep_offline_executors,
)
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.migrate import migrate
from nodeplane.controlplane.web.routes import web_routes
from nodeplane.controlplane.web.security import BrowserSecurity
from nodeplane.controlplane.webhooks.dispatcher import WebhookDispatcher
from nodeplane.protocol.addresses import parse_listen_address
from nodeplane.protocol.text import unstorable_text_problem

log = structlog.get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001


def _error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code.value}}]}


# A GraphQL string escape for NUL, which PostgreSQL cannot store: \u0000 or \u{0}.
_NUL_ESCAPE = re.compile(r"\\u(?:0000|\{0+\})")


# In a JSON body, a NUL or a lone surrogate can only arrive escaped (\u0000, \ud800-\udfff) or,
# for a surrogate, as raw non-ASCII bytes that Python's decoder lets through: an ASCII body with
# neither escape holds no such string, and the walk over every value is skipped.
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _plainly_storable(body: bytes) -> bool:
    """True when no string in the JSON `body` can hold NUL or an unpaired surrogate."""
    return body.isascii() and b"\x00" not in body and _RISKY_ESCAPE.search(body) is None


def _unstorable_text(value: Any) -> bool:
    """True if a string anywhere in a parsed JSON value holds NUL or an unpaired surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if unstorable_text_problem(item):
                return True
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return False


class _NotFinite(ValueError):
    """NaN, Infinity or a number too large for a float: valid to Python's json, not to JSON."""


def _no_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _request_problem(parsed: Any, body: bytes) -> str | None:
    """Why a parsed body is not a GraphQL request the API can serve, or None."""
    if (
        not isinstance(parsed, dict)
        or not isinstance(parsed.get("query"), str)
        or not parsed["query"].strip()
    ):
        return "body must be an object with a query"
    if parsed.get("variables") is not None and not isinstance(parsed["variables"], dict):
        return "variables must be an object"
    if parsed.get("operationName") is not None and not isinstance(parsed["operationName"], str):
        return "operationName must be a string"
    if (not _plainly_storable(body) and _unstorable_text(parsed)) or _NUL_ESCAPE.search(
        parsed["query"]
    ):
        return "text must not contain NUL characters or unpaired surrogates"
    return None


# Heartbeat digests the body guard remembers (about 100 bytes each); past this, it starts afresh.
MAX_PASSED_SYNCS = 50_000


class GraphQLBodyGuard:
    """Refuses oversized or malformed JSON bodies on POST /graphql with typed errors."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Digests of heartbeat bodies that passed (a fleet repeats each for minutes): the same
        # bytes pass again, unparsed (api/executor_calls.py `ExecutorBody`).
        self._passed_syncs: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/graphql":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send, 413, ErrorCode.PAYLOAD_TOO_LARGE)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send, 413, ErrorCode.PAYLOAD_TOO_LARGE)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not content_type.startswith("application/json"):
            await self._reject(
                scope, receive, send, 415, ErrorCode.BAD_REQUEST, "send application/json"
            )
            return
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if digest in self._passed_syncs:
            scope[EXECUTOR_BODY_SCOPE_KEY] = ExecutorBody(SYNC, digest, body)
            del chunks, headers
            await self.app(scope, replay_body(body, receive), send)
            return
        try:
            parsed = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
        except _NotFinite:
            await self._reject(
                scope, receive, send, 400, ErrorCode.BAD_REQUEST, "numbers must be finite"
            )
            return
        except (ValueError, UnicodeDecodeError, RecursionError):
            await self._reject(
                scope, receive, send, 400, ErrorCode.BAD_REQUEST, "body is not valid JSON"
            )
            return
        if problem := _request_problem(parsed, body):
            await self._reject(scope, receive, send, 400, ErrorCode.BAD_REQUEST, problem)
            return
        if operation := executor_operation(parsed):
            # Parsed once: the executors' direct path reads it from here (api/executor_calls.py).
            # With a digest of its bytes, which tells a repeated heartbeat (a collision-free
            # one: an answer may be kept for it, services/executors.py `kept_sync`).
            scope[EXECUTOR_BODY_SCOPE_KEY] = ExecutorBody(operation, digest, body, parsed)
            if operation == SYNC:
                if len(self._passed_syncs) >= MAX_PASSED_SYNCS:
                    self._passed_syncs.clear()
                self._passed_syncs.add(digest)
        # A spec poll is held for up to 30 s, thousands at once: keep nothing read here alive
        # meanwhile (locals live as long as this frame) but the body the application reads.
        del chunks, parsed, headers
        await self.app(scope, replay_body(body, receive), send)

    async def _reject(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: ErrorCode,
        message: str | None = None,
    ) -> None:
        text = message or f"request body larger than {self.max_bytes} bytes"
        await JSONResponse(_error_body(code, text), status_code=status)(scope, receive, send)


# The executors' heartbeats and spec polls, which a fleet sends a few hundred times a second:
# answered without an error, their access lines are at debug level (the request metrics count
# them); anything else, and any error answer, at info.
_QUIET_OPERATIONS = frozenset({SYNC, POLL})


class AccessLog:
    """One structured line per HTTP request (the executors' routine calls at debug level)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            routine = status < 400 and scope.get(OPERATION_SCOPE_KEY) in _QUIET_OPERATIONS
            # Checked here: the log call would format the line before the level drops it.
            if not routine or _stdlib_log.isEnabledFor(logging.DEBUG):
                (log.debug if routine else log.info)(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )


async def _sweep_forever(
    db: Database, settings: Settings, heartbeat: Heartbeat, full_collections: FullCollections | None
) -> None:
    next_account_sweep = 0.0
    next_alert_sweep = 0.0
    while True:
        if full_collections is not None and (freed := full_collections.maybe_collect()) is not None:
            log.debug("gc.full_collection", freed=freed)
        try:
            # Also opens executor_offline, in the transaction that marks an executor offline.
            await sweep_offline_executors(db, heartbeat)
        except Exception:
            log.exception("sweep.failed")
        if time.monotonic() >= next_alert_sweep:
            next_alert_sweep = time.monotonic() + settings.alert_interval
            try:
                # What time alone makes true (sync_stalled); observations are judged on arrival.
                await sweep_alerts(db)
            except Exception:
                log.exception("alert_sweep.failed")
        if time.monotonic() >= next_account_sweep:
            next_account_sweep = time.monotonic() + settings.accounts.sweep_interval
            try:
                await sweep_account_records(db, settings.accounts)
                await sweep_instance_refusals(db)
            except Exception:
                log.exception("account_sweep.failed")
        await asyncio.sleep(settings.sweep_interval)


async def _prune_events_forever(db: Database, retention: EventRetention) -> None:
    """The events feed's retention, in a task of its own: a long first round on a big feed
    must not delay the offline sweep."""
    while True:
        try:
            pruned = await prune_events(db, retention)
            if pruned is not None and (pruned.by_age or pruned.by_count):
                log.info("events.pruned", by_age=pruned.by_age, by_count=pruned.by_count)
        except Exception:
            log.exception("events.prune_failed")
        await asyncio.sleep(retention.interval)


class ControlPlaneApp:
    """The ASGI application plus the hook a server calls when asked to shut down.

    With a metrics listen address, the server also listens there, and requests that arrive on
    that port go to `metrics_app` alone (it serves /metrics and nothing else)."""

    def __init__(
        self,
        app: ASGIApp,
        db: Database,
        metrics_app: ASGIApp | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self._app = app
        self._db = db
        self._metrics_app = metrics_app
        self._metrics_port = metrics_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._metrics_app is not None
            and scope["type"] == "http"
            and (server := scope.get("server")) is not None
            and server[1] == self._metrics_port
        ):
            await self._metrics_app(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def begin_shutdown(self) -> None:
        """Answer every held spec poll now, so a graceful stop does not wait out their timeouts."""
        self._db.notifier.close_all()


def create_app(settings: Settings | None = None, *, manage_gc: bool = False) -> ControlPlaneApp:
    """Build the application; the database is migrated and the first admin created on start.

    `manage_gc`: the process is the server's own (not a test or an embedding program), so the
    application may decide when the garbage collector runs (gc_policy.py)."""
    settings = settings or Settings()
    if problem := token_problem(settings.metrics_token):
        raise ValueError(problem)
    metrics_port = (
        parse_listen_address(settings.metrics_listen)[1] if settings.metrics_listen else None
    )
    # Documents are parsed and passwords hashed on worker threads; a short switch interval hands
    # the interpreter back to the event loop within a millisecond, so they never hold it long.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    db = Database(
        settings.database_url,
        sqlite_busy_timeout_ms=int(settings.request_time_budget * 1000),
        seen_flush_seconds=settings.seen_flush_interval,
    )

    # Executors get one heartbeat timeout of grace from this process's start (heartbeat.py).
    heartbeat = Heartbeat(settings.heartbeat_timeout)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, settings.database_url)
        admin = await bootstrap_admin(db, settings)
        if admin is not None:
            log.info("admin.created", email=admin.email)
            if admin.generated_password:
                # Shown once, on the terminal only: it is never logged or stored in clear.
                print(
                    f"\nFirst admin: {admin.email}  password: {admin.generated_password}\n"
                    "(set NODEPLANE_ADMIN_EMAIL / NODEPLANE_ADMIN_PASSWORD to choose them)\n",
                    file=sys.stderr,
                    flush=True,
                )
        await db.start()
        full_collections = None
        if manage_gc:
            settle_after_startup()
            full_collections = FullCollections()
        sweeper = asyncio.create_task(
            _sweep_forever(db, settings, heartbeat, full_collections), name="nodeplane-sweeper"
        )
        # Webhooks go out from a task of their own, never from a request (webhooks/dispatcher.py).
        dispatcher = WebhookDispatcher(db, settings.webhooks)
        dispatching = asyncio.create_task(dispatcher.run(), name="nodeplane-webhooks")
        pruner = asyncio.create_task(
            _prune_events_forever(db, settings.event_retention), name="nodeplane-event-pruner"
        )
        log.info("controlplane.started", database=db.dialect, production=settings.production)
        try:
            yield
        finally:
            for task in (sweeper, dispatching, pruner):
                task.cancel()
            for task in (sweeper, dispatching, pruner):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await dispatcher.close()
            shutdown_password_workers()
            await db.close()

    async def healthz(_request: Request) -> JSONResponse:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok", "database": db.dialect})

    graphql = GraphQLApp(db, settings, heartbeat)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Route(
            METRICS_PATH,
            MetricsEndpoint(db, settings, require_token=True),
            methods=["GET", "HEAD"],
        ),
        *web_routes(db, settings),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    templates = RouteTemplates(routes)
    guarded = GraphQLBodyGuard(app, settings.max_body_bytes)
    main = RequestMetrics(
        AccessLog(BrowserSecurity(guarded, production=settings.production)), templates
    )
    if metrics_port is None:
        return ControlPlaneApp(main, db)
    listener_endpoint = MetricsEndpoint(db, settings, require_token=False)
    templates.add(listener_endpoint, METRICS_PATH)
    listener = RequestMetrics(AccessLog(MetricsListener(listener_endpoint)), templates)
    return ControlPlaneApp(main, db, listener, metrics_port)
