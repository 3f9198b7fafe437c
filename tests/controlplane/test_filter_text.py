"""Filter text that reaches the services in-process (the web pages call the API without the HTTP
body guard): a NUL or an unpaired surrogate is a typed `invalid_input`, never a database error.

On PostgreSQL `GET /nodes?q=%00` was an HTTP 500: the nodes page passed the NUL through to a
LIKE. These call the services the pages call, on a real migrated SQLite and PostgreSQL database.
"""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.controlplane.auth.principal import Principal, Role
from nodeplane.controlplane.errors import DomainError
from nodeplane.controlplane.services import events, nodes
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.migrate import migrate
from tests.conftest import BACKENDS, new_database_url
from tests.support.server import drop_pg_database

READER = Principal(
    kind="user", organization_id=uuid.uuid4(), label="reader@example.test", role=Role.MEMBER
)
BAD = ["a\x00b", "\x00", "\ud800", "x" * 129]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = new_database_url(request.param, tmp_path)
    migrate(url)
    yield url
    if request.param == "postgresql":
        drop_pg_database(url)


def outcome(database_url: str, call: str, text: str) -> str:
    """`ok`, or the error code of the service call with `text` in the filter."""

    async def run() -> str:
        db = Database(database_url)
        try:
            async with db.read() as session:
                if call == "nodes.name":
                    await nodes.list_nodes(session, READER, nodes.NodeFilter(name=text))
                elif call == "nodes.chain":
                    await nodes.list_nodes(session, READER, nodes.NodeFilter(chain=text))
                elif call == "nodes.after":
                    await nodes.list_nodes(session, READER, nodes.NodeFilter(), after=text)
                else:
                    await events.list_events(session, READER, events.EventFilter(type=text))
            return "ok"
        except DomainError as err:
            return err.code.value
        finally:
            await db.close()

    return asyncio.run(run())


CALLS = ["nodes.name", "nodes.chain", "nodes.after", "events.type"]


@pytest.mark.parametrize("call", CALLS)
def test_unstorable_filter_text_is_invalid_input(database_url: str, call: str) -> None:
    for text in BAD:
        assert outcome(database_url, call, text) == "invalid_input", (call, text)
    for text in ("ltc", "node.*", "%_\\", "é✓"):
        assert outcome(database_url, call, text) == "ok", (call, text)
