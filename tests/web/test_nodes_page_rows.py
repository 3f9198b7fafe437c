"""The nodes page reads its rows and executors from the service layer, not through the GraphQL
executor (which cost three quarters of a 1,000-node page's CPU, issue 8): they must stay exactly
what the API answers for the same caller and filter, page by page, in a number of SQL statements
set by the pages of rows and not by the nodes on them. In-process against a real server's
database, SQLite and PostgreSQL."""

import asyncio
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import event
from starlette.requests import Request

from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.services import nodes as node_service
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.web import pages
from nodeplane.controlplane.web.session import PageQuery
from nodeplane.protocol import NodePhase, ObservedNodeState, ProcessStatus
from tests.support.fleet import LIFECYCLE, LITECOIN_SPEC, FakeExecutor, Org, running
from tests.support.server import ServerProcess
from tests.web.helpers import create_node

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/nodes",
    "query_string": b"",
    "headers": [(b"host", b"test")],
    "scheme": "http",
    "server": ("test", 80),
}


@pytest.fixture
def fleet(org: Org, executor: FakeExecutor) -> dict[str, str]:
    """Nodes in several states on `executor`: running with metrics, never observed, stopping
    (a pending change), being deleted; name → id."""
    ids = {
        name: create_node(org, executor, name, LITECOIN_SPEC)
        for name in ("alpha", "bravo", "charlie", "delta", "echo")
    }
    org.owner(LIFECYCLE, {"id": ids["charlie"], "action": "STOP"})
    org.owner(
        "mutation($id: UUID!) { deleteNode(nodeId: $id, retainData: true) { id } }",
        {"id": ids["delta"]},
    )
    executor.sync(
        {
            ids["alpha"]: ObservedNodeState(
                revision=1, processes=[running(height=123_456, peers=8, sync_progress=0.5)]
            ),
            ids["charlie"]: ObservedNodeState(revision=1, processes=[running()]),
            ids["echo"]: ObservedNodeState(
                revision=1,
                processes=[running(), running("sidecar", height=7)],
            ),
        }
    )
    executor.observe(ids["bravo"], 1, ProcessStatus.STOPPED)
    return ids


def _in_process(token: str, server: ServerProcess, fn: Any) -> Any:
    """`fn(db, settings, principal, query)` against the server's database as `token`'s user."""

    async def go() -> Any:
        db = Database(server.database_url)
        settings = Settings(database_url=server.database_url, heartbeat_timeout=60)
        try:
            principal = await authenticate(db, token)
            assert principal is not None
            return await fn(
                db, settings, principal, PageQuery(db, settings, principal, Request(SCOPE))
            )
        finally:
            await db.close()

    return asyncio.run(go())


def _compare(
    server: ServerProcess, token: str, flt: dict[str, Any], max_page: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(the page's rows, the API's items, the statements the page's rows took) for `flt`; the
    page reads `max_page` rows at a time when given."""

    async def both(db: Database, settings: Settings, principal: Any, query: PageQuery) -> Any:
        api = (await query(pages.NODES, {"filter": flt, "after": None}))["nodes"]["items"]
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        service_filter = node_service.NodeFilter(
            name=flt.get("name"),
            chain=flt.get("chain"),
            phase=NodePhase(flt["phase"].lower()) if flt.get("phase") else None,
            executor_id=UUID(flt["executorId"]) if flt.get("executorId") else None,
        )
        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        with pytest.MonkeyPatch.context() as mp:
            if max_page is not None:
                mp.setattr(node_service, "MAX_PAGE", max_page)
            rows = await pages.node_rows(db, settings, principal, service_filter)
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        return rows, api, statements

    result: tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]
    result = _in_process(token, server, both)
    return result


@pytest.mark.parametrize(
    "flt",
    [
        {},
        {"name": "a"},
        {"phase": "STOPPED"},
        {"phase": "RUNNING"},
        {"chain": "litecoin"},
        {"chain": "nonesuch"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "all",
)
def test_the_pages_rows_are_the_apis_items(
    server: ServerProcess, org: Org, fleet: dict[str, str], flt: dict[str, Any]
) -> None:
    assert org.owner.token is not None
    rows, api, _ = _compare(server, org.owner.token, flt)
    assert rows == api
    if not flt:
        assert [r["name"] for r in rows] == sorted(fleet)


def test_the_pages_rows_by_executor(
    server: ServerProcess, org: Org, executor: FakeExecutor, fleet: dict[str, str]
) -> None:
    assert org.owner.token is not None and executor.id is not None
    rows, api, _ = _compare(server, org.owner.token, {"executorId": executor.id})
    assert rows == api and len(rows) == len(fleet)
    assert {r["executor"]["name"] for r in rows} == {executor.name}


def test_rows_are_read_a_page_at_a_time_in_few_statements(
    server: ServerProcess, org: Org, fleet: dict[str, str]
) -> None:
    """With pages of 2 rows, five nodes take three pages of nodes and one read of their
    executors: statements grow with pages, never with the nodes on them."""
    assert org.owner.token is not None
    rows, api, statements = _compare(server, org.owner.token, {}, max_page=2)
    assert rows == api
    assert [r["name"] for r in rows] == sorted(fleet)
    node_reads = [s for s in statements if "FROM nodes" in s]
    assert len(node_reads) == 3, statements
    assert len(statements) == 4, statements


def test_the_pages_executors_are_the_apis(
    server: ServerProcess, org: Org, executor: FakeExecutor
) -> None:
    other = FakeExecutor(server.url, org.executor_key("other"), name="aaa-" + executor.name)
    other.sync()

    async def both(db: Database, settings: Settings, principal: Any, query: PageQuery) -> Any:
        api = (await query("{ executors { id name capabilities } }"))["executors"]
        return await pages.executor_choices(db, principal), api

    assert org.owner.token is not None
    choices, api = _in_process(org.owner.token, server, both)
    assert choices == api
    assert [e["name"] for e in choices] == [other.name, executor.name]
