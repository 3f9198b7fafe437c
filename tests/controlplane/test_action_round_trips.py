"""A lifecycle action's round trips to PostgreSQL, counted on the wire.

Under load, each round trip of a request waits its turn on the busy event loop, and a lifecycle
action's own request was most of P1's pickup time (issue 8, docs/benchmarks.md): eleven round
trips. Three of them were not needed: its two events went in two INSERTs (the alert rules' read
flushed the first), its answer read the executor again after the lock had the node, and NOTIFY
went apart from COMMIT; and a personal API key (what the CLI sends) was authenticated by two
statements, the key and then its owner's role. libpq's trace of the request's own connections counts them: every round
trip ends with one ReadyForQuery from the server. The answer and the events stay exact.
"""

import asyncio
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import event

from nodeplane.controlplane.app import create_app
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.store.database import Database
from nodeplane.protocol import ObservedNodeState
from tests.support.fleet import LIFECYCLE, LITECOIN_SPEC, FakeExecutor, make_org, running
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token, pg_server
from tests.web.helpers import create_node

pytestmark = pytest.mark.server

# Authentication (a session's or a personal key's: one statement), BEGIN, the node's lock (its executor read with it), the node's UPDATE, the
# revision's INSERT, both events' INSERT, the alert rules' read, NOTIFY with COMMIT.
ACTION_ROUND_TRIPS = 8

EVENTS = """
query($id: UUID!) { events(filter: { nodeId: $id }, first: 10) { items { id type payload } } }
"""

# Set while the request under test runs: the connections it checks out are traced.
_traced: ContextVar[bool] = ContextVar("traced", default=False)


@pytest.fixture(name="pg_server")
def pg_server_fixture(tmp_path: Path) -> Iterator[ServerProcess]:
    with pg_server(tmp_path) as server:
        yield server


def _starlette(app: Any) -> Any:
    while not hasattr(app, "router"):
        app = getattr(app, "app", None) or app._app
    return app


def _trace_checkouts(db: Database, trace_file: Path) -> None:
    """Trace, to `trace_file`, the libpq traffic of every connection checked out while
    `_traced` is set, until it is checked in."""

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if not _traced.get():
            return
        pgconn = dbapi_connection.driver_connection.pgconn
        fd = os.open(trace_file, os.O_WRONLY | os.O_APPEND)
        pgconn.trace(fd)
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        record.info["traced"] = pgconn

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        if (pgconn := record.info.pop("traced", None)) is not None:
            pgconn.untrace()  # flushes what it wrote

    event.listen(db.engine.sync_engine, "checkout", checkout)
    event.listen(db.engine.sync_engine, "checkin", checkin)


async def _act(database_url: str, token: str, node_id: str, trace_file: Path) -> dict[str, Any]:
    """Stop the node through an in-process control plane on the server's database, tracing the
    request's own connections; its answer."""
    app = create_app(Settings(database_url=database_url, heartbeat_timeout=60))
    starlette = _starlette(app)
    _trace_checkouts(app._db, trace_file)
    async with (
        starlette.router.lifespan_context(starlette),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cp") as http,
    ):
        tracing = _traced.set(True)
        try:
            response = await http.post(
                "/graphql",
                json={"query": LIFECYCLE, "variables": {"id": node_id, "action": "STOP"}},
                headers={"authorization": f"Bearer {token}"},
            )
        finally:
            _traced.reset(tracing)
    body: dict[str, Any] = response.json()
    return body


PERSONAL_KEY = 'mutation { createApiKey(name: "cli", kind: PERSONAL) { secret } }'


@pytest.mark.parametrize("credential", ["session", "personal key"])
def test_a_lifecycle_action_takes_eight_round_trips(
    pg_server: ServerProcess, tmp_path: Path, credential: str
) -> None:
    admin = Client(pg_server.url, admin_token(pg_server.url))
    org = make_org(pg_server.url, admin)
    executor = FakeExecutor(pg_server.url, org.executor_key())
    executor.sync()
    node_id = create_node(org, executor, "alpha", LITECOIN_SPEC)
    # Running, so that the stop moves its phase (running -> stopping): both events are written.
    executor.sync({node_id: ObservedNodeState(revision=1, processes=[running()])})
    # A personal key (the CLI's) is one statement too: the key, its owner and their role.
    token = (
        org.owner(PERSONAL_KEY)["createApiKey"]["secret"]
        if credential == "personal key"
        else org.owner.token
    )
    assert token is not None
    trace_file = tmp_path / "libpq.trace"
    trace_file.touch()

    body = asyncio.run(_act(pg_server.database_url, token, node_id, trace_file))

    answer = body["data"]["requestNodeLifecycleAction"]
    assert (answer["desiredState"], answer["revision"]) == ("STOPPED", 2)
    lines = trace_file.read_text().splitlines()
    ready = [line for line in lines if "\tReadyForQuery\t" in line]
    assert len(ready) == ACTION_ROUND_TRIPS, "\n".join(
        line for line in lines if line.split("\t")[0] == "F"
    )
    # The events are exact and in order: the phase's transition, then the request.
    items = org.owner(EVENTS, {"id": node_id})["events"]["items"]
    newest = [(item["type"], item["payload"].get("revision")) for item in items[:2]]
    assert newest == [("node.lifecycle.requested", 2), ("node.lifecycle.transition", 2)]
    assert int(items[0]["id"]) > int(items[1]["id"])
