"""Round trips to PostgreSQL of a lifecycle action and of a sync whose metric values moved,
counted on the wire.

Under load, each round trip of a request waits its turn on the busy event loop, and a lifecycle
action's own request was most of P1's pickup time (issue 8, docs/benchmarks.md): eleven round
trips. Three of them were not needed: its two events went in two INSERTs (the alert rules' read
flushed the first), its answer read the executor again after the lock had the node, and NOTIFY
went apart from COMMIT. A personal API key (what the CLI sends) was authenticated by two
statements, the key and then its owner's role. A sync whose metric values moved (one in six)
sent NOTIFY apart from COMMIT too: seven round trips, now six. libpq's trace of the request's
own connections counts them: every round trip ends with one ReadyForQuery from the server.
The answers, the events and what is stored stay exact.
"""

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
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
from nodeplane.protocol.executor_api import INSTANCE_HEADER
from nodeplane.protocol.executor_documents import SYNC_EXECUTOR
from tests.support.fleet import LIFECYCLE, LITECOIN_SPEC, FakeExecutor, make_org, running
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token, pg_server
from tests.web.helpers import create_node

pytestmark = pytest.mark.server

# Authentication (a session's or a personal key's: one statement), BEGIN, the node's lock (its executor read with it), the node's UPDATE, the
# revision's INSERT, both events' INSERT, the alert rules' read, NOTIFY with COMMIT.
ACTION_ROUND_TRIPS = 8

NODE_OBSERVED = "query($id: UUID!) { node(id: $id) { observed } }"
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


@dataclass(frozen=True)
class Call:
    """One GraphQL request to the in-process control plane; `traced`: its round trips count."""

    query: str
    variables: dict[str, Any]
    headers: dict[str, str]
    traced: bool = True


async def _in_process(database_url: str, calls: list[Call], trace_file: Path) -> list[Any]:
    """Send `calls` in turn through an in-process control plane on the server's database,
    tracing the traced ones' own connections; their answers (the bodies' data)."""
    app = create_app(Settings(database_url=database_url, heartbeat_timeout=60))
    starlette = _starlette(app)
    _trace_checkouts(app._db, trace_file)
    answers: list[Any] = []
    async with (
        starlette.router.lifespan_context(starlette),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cp") as http,
    ):
        for call in calls:
            tracing = _traced.set(call.traced)
            try:
                response = await http.post(
                    "/graphql",
                    json={"query": call.query, "variables": call.variables},
                    headers=call.headers,
                )
            finally:
                _traced.reset(tracing)
            body = response.json()
            assert not body.get("errors"), body
            answers.append(body["data"])
    return answers


def _round_trips(trace_file: Path) -> tuple[int, str]:
    """Round trips in the trace (each ends with one ReadyForQuery), and what the client sent."""
    lines = trace_file.read_text().splitlines()
    ready = [line for line in lines if "\tReadyForQuery\t" in line]
    sent = "\n".join(line[:300] for line in lines if line.split("\t")[0] == "F")
    return len(ready), sent


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
    action = Call(
        LIFECYCLE, {"id": node_id, "action": "STOP"}, {"authorization": f"Bearer {token}"}
    )

    [answered] = asyncio.run(_in_process(pg_server.database_url, [action], trace_file))

    answer = answered["requestNodeLifecycleAction"]
    assert (answer["desiredState"], answer["revision"]) == ("STOPPED", 2)
    trips, sent = _round_trips(trace_file)
    assert trips == ACTION_ROUND_TRIPS, sent
    # The events are exact and in order: the phase's transition, then the request.
    items = org.owner(EVENTS, {"id": node_id})["events"]["items"]
    newest = [(item["type"], item["payload"].get("revision")) for item in items[:2]]
    assert newest == [("node.lifecycle.requested", 2), ("node.lifecycle.transition", 2)]
    assert int(items[0]["id"]) > int(items[1]["id"])


# BEGIN, the executor's claim, the nodes' lock, their new values, the metric rules' read,
# NOTIFY with COMMIT.
MOVED_SYNC_ROUND_TRIPS = 6


def test_a_sync_whose_metric_values_moved_takes_six_round_trips(
    pg_server: ServerProcess, tmp_path: Path
) -> None:
    """What an agent sends once per metrics interval for every node it runs: one sync in six."""
    admin = Client(pg_server.url, admin_token(pg_server.url))
    org = make_org(pg_server.url, admin)
    key = org.executor_key()
    executor = FakeExecutor(pg_server.url, key, instance_id=uuid.uuid4())
    executor.sync()
    node_ids = [create_node(org, executor, f"n{i}", LITECOIN_SPEC) for i in range(3)]

    def sync(height: int) -> dict[str, Any]:
        observed = ObservedNodeState(revision=1, processes=[running(height=height)])
        request = executor.sync_request([(n, observed) for n in node_ids])
        return {"input": request.to_wire()}

    headers = {"authorization": f"Bearer {key}", INSTANCE_HEADER: str(executor.instance_id)}
    trace_file = tmp_path / "libpq.trace"
    trace_file.touch()
    # The first stores the observations; the second repeats them (answered from memory); the
    # third moves the height alone.
    asyncio.run(
        _in_process(
            pg_server.database_url,
            [
                Call(SYNC_EXECUTOR, sync(100), headers, traced=False),
                Call(SYNC_EXECUTOR, sync(100), headers, traced=False),
                Call(SYNC_EXECUTOR, sync(101), headers),
            ],
            trace_file,
        )
    )
    trips, sent = _round_trips(trace_file)
    assert trips == MOVED_SYNC_ROUND_TRIPS, sent
    observed = org.owner(NODE_OBSERVED, {"id": node_ids[0]})["node"]["observed"]
    assert observed["processes"][0]["height"] == 101
