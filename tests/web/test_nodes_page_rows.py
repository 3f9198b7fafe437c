"""The nodes page reads its rows and executors from the service layer, not through the GraphQL
executor (which cost three quarters of a 1,000-node page's CPU, issue 8): they must stay exactly
what the API answers for the same caller and filter. They come a numbered page at a time, in the
columns the page shows (never the whole spec), in a fixed number of SQL statements; pages cover
the list once in every sort order, and the total counts every node through the filters. Then the
page itself over HTTP: the range, Previous/Next keeping the filters, a bad page size a 400, a page
past the last the last. In-process and over HTTP against a real server, SQLite and PostgreSQL."""

import asyncio
import re
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


def _service_filter(flt: dict[str, Any]) -> node_service.NodeFilter:
    return node_service.NodeFilter(
        name=flt.get("name"),
        chain=flt.get("chain"),
        phase=NodePhase(flt["phase"].lower()) if flt.get("phase") else None,
        executor_id=UUID(flt["executorId"]) if flt.get("executorId") else None,
    )


def _compare(
    server: ServerProcess, token: str, flt: dict[str, Any], **paging: Any
) -> tuple[pages.NodeRows, list[dict[str, Any]], list[str]]:
    """(the page's rows, the API's items, the statements the page's rows took) for `flt` and
    `paging` (node_rows' sort, descending, page and per_page)."""

    async def both(db: Database, settings: Settings, principal: Any, query: PageQuery) -> Any:
        api = (await query(pages.NODES, {"filter": flt, "after": None}))["nodes"]["items"]
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        rows = await pages.node_rows(db, settings, principal, _service_filter(flt), **paging)
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        return rows, api, statements

    result: tuple[pages.NodeRows, list[dict[str, Any]], list[str]]
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
    assert rows.items == api
    assert rows.total == len(api) and rows.page == 1
    if not flt:
        assert [r["name"] for r in rows.items] == sorted(fleet)


def test_the_pages_rows_by_executor(
    server: ServerProcess, org: Org, executor: FakeExecutor, fleet: dict[str, str]
) -> None:
    assert org.owner.token is not None and executor.id is not None
    rows, api, _ = _compare(server, org.owner.token, {"executorId": executor.id})
    assert rows.items == api and len(rows.items) == len(fleet)
    assert {r["executor"]["name"] for r in rows.items} == {executor.name}


# Whole specs decoded for every row were a third of a 1,000-row page's CPU: the rows read the
# desired state out of the JSON in the database, never the spec column itself.
WHOLE_SPEC = re.compile(r"(?:SELECT|,)\s+nodes\.spec\s*(?:,|FROM)", re.I)


@pytest.mark.parametrize("flt", [{}, {"phase": "RUNNING"}], ids=["all", "phase"])
def test_a_page_of_rows_takes_a_few_narrow_statements(
    server: ServerProcess, org: Org, fleet: dict[str, str], flt: dict[str, Any]
) -> None:
    """The second page of one row: one count, one read of the page's rows and one of their
    executors; filtered by the derived phase, one read of the filtered nodes' columns
    (the count is theirs) and one of the executors. No statement reads a whole spec."""
    assert org.owner.token is not None
    rows, api, statements = _compare(server, org.owner.token, flt, page=2, per_page=1)
    assert len(api) >= 2 and rows.items == api[1:2] and rows.total == len(api)
    node_reads = [s for s in statements if "FROM nodes" in s]
    assert len(node_reads) == (1 if flt else 2), statements
    assert len(statements) == len(node_reads) + 1, statements
    assert not [s for s in statements if WHOLE_SPEC.search(s)], statements


def _expected_order(rows: list[dict[str, Any]], sort: str, descending: bool) -> list[str]:
    """The page's order computed here: the sort's key, then name and id, all reversed when
    descending."""
    phases = [p.name for p in NodePhase]
    key = {
        "name": lambda r: (),
        "chain": lambda r: (r["chain"], r["network"]),
        "phase": lambda r: (phases.index(r["phase"]),),
        "executor": lambda r: (r["executor"]["name"],),
        "updated": lambda r: (r["updatedAt"],),
    }[sort]
    ordered = sorted(rows, key=lambda r: (*key(r), r["name"], r["id"]), reverse=descending)
    return [r["id"] for r in ordered]


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("sort", node_service.NODE_SORTS)
def test_pages_cover_the_list_once_in_every_order(
    server: ServerProcess,
    org: Org,
    executor: FakeExecutor,
    fleet: dict[str, str],
    sort: str,
    descending: bool,
) -> None:
    """Pages of 2 rows over seven nodes on two executors (two nodes named alike): each node on
    exactly one page, in the sort's order with name and id breaking ties; a page past the last
    is the last."""
    other = FakeExecutor(server.url, org.executor_key("other"), name="aaa-" + executor.name)
    other.sync()
    create_node(org, other, "alpha", LITECOIN_SPEC)  # the same name on another executor
    create_node(org, other, "foxtrot", LITECOIN_SPEC)
    assert org.owner.token is not None
    token = org.owner.token

    async def pages_of(db: Database, settings: Settings, principal: Any, _: PageQuery) -> Any:
        flt = node_service.NodeFilter()
        got = []
        for page in (1, 2, 3, 4, 5):
            got.append(
                await pages.node_rows(
                    db,
                    settings,
                    principal,
                    flt,
                    sort=sort,
                    descending=descending,
                    page=page,
                    per_page=2,
                )
            )
        return got

    got: list[pages.NodeRows] = _in_process(token, server, pages_of)
    assert [(p.page, p.total, p.first, p.last, p.pages) for p in got] == [
        (1, 7, 1, 2, 4),
        (2, 7, 3, 4, 4),
        (3, 7, 5, 6, 4),
        (4, 7, 7, 7, 4),
        (4, 7, 7, 7, 4),  # page 5 of 4: the last
    ]
    listed = [r for p in got[:4] for r in p.items]
    assert len({r["id"] for r in listed}) == 7
    assert [r["id"] for r in listed] == _expected_order(listed, sort, descending)


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
