"""`GET /metrics`: who may read it, and the Prometheus text it answers.

The metrics cover every organization, so no user's session or API key opens them. Either:

- a metrics token (NODEPLANE_METRICS_TOKEN) is configured, and `/metrics` on the main port
  answers a request bearing `Authorization: Bearer <token>`, 401 to any other; or
- a metrics listen address (`--metrics-listen` / NODEPLANE_METRICS_LISTEN) is configured, and
  `/metrics` on that socket answers without a token: the address is the protection (loopback or
  a private interface a Prometheus server reaches).

With neither, `/metrics` on the main port is 404, as if there were no such page.
"""

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.metrics.fleet_collector import FleetText
from nodeplane.controlplane.metrics.multiprocess import process_registry
from nodeplane.controlplane.services.fleet_status import read_fleet_status
from nodeplane.controlplane.store.database import Database

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
# Nodes whose samples are written per turn of the event loop (3-4 ms of work here). A request
# arriving meanwhile needs several turns to be answered, each after one such slice: with 500
# nodes a slice, a health check waited 190 ms during a scrape of 15,000 nodes.
NODES_PER_TURN = 100
# Shorter tokens are refused at start: one guessed by brute force reads every organization.
MIN_TOKEN_LENGTH = 16


def token_problem(token: str | None) -> str | None:
    """Why a configured metrics token cannot be used, or None."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        return f"NODEPLANE_METRICS_TOKEN must be at least {MIN_TOKEN_LENGTH} characters"
    return None


def bearer_matches(header: str | None, token: str) -> bool:
    """True when an Authorization header carries exactly `token` (compared in constant time)."""
    if header is None or header[:7].lower() != "bearer ":
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


class MetricsEndpoint:
    """The `/metrics` page, with or without the token check (`require_token`)."""

    def __init__(self, db: Database, settings: Settings, *, require_token: bool) -> None:
        self.db = db
        self.settings = settings
        self.require_token = require_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("use GET", status_code=405, headers={"allow": "GET, HEAD"})
        if self.require_token:
            token = self.settings.metrics_token
            if token is None:
                return PlainTextResponse("Not Found", status_code=404)
            if not bearer_matches(request.headers.get("authorization"), token):
                return PlainTextResponse(
                    "metrics need the metrics token",
                    status_code=401,
                    headers={"www-authenticate": 'Bearer realm="nodeplane-metrics"'},
                )
        async with self.db.read() as session:
            status = await read_fleet_status(session, self.settings.heartbeat_timeout)
        fleet = FleetText()
        # A turn of the event loop between parts: a large fleet's text takes a while to write.
        for start in range(0, len(status.nodes), NODES_PER_TURN):
            fleet.add_nodes(status.nodes[start : start + NODES_PER_TURN])
            await asyncio.sleep(0)
        fleet.add_executors(status.executors)
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return StreamingResponse(
            _body(fleet, encode),
            media_type=None,
            headers={"content-type": content_type, "cache-control": "no-store"},
        )


async def _body(
    fleet: FleetText, encode: Callable[[CollectorRegistry], bytes]
) -> AsyncIterator[bytes]:
    """The fleet families, then this process's (or all workers') own instruments, whose
    encoding ends the OpenMetrics text (`# EOF`). Sent in parts, a turn of the event loop
    after each: at 15,000 nodes the text is about 46 MB."""
    for part in fleet.parts(encode):
        yield part.encode()
        await asyncio.sleep(0)
    yield encode(process_registry())


class MetricsListener:
    """The ASGI app of the separate metrics socket: `/metrics` without a token, nothing else."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == METRICS_PATH:
            scope["endpoint"] = self.endpoint  # for the request metrics' route label
            await self.endpoint(scope, receive, send)
            return
        await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
