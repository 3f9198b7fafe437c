"""PostgreSQL drops the control plane's connections (a restart, a failover, an idle-connection
reaper): the server keeps answering. Pooled connections idle for a while are pinged before use;
one used moments ago is not, so a request on it may fail once, typed and retryable, and then
every pooled connection is renewed."""

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from nodeplane.controlplane.store.database import IDLE_PING_SECONDS
from tests.support.gql import Client, GraphQLError
from tests.support.server import (
    PG_ADMIN_URL,
    ServerProcess,
    admin_token,
    pg_server,
)

pytestmark = pytest.mark.server

ME = "{ me { email } }"


@pytest.fixture(name="pg_server")
def pg_server_fixture(tmp_path: Path) -> Iterator[ServerProcess]:
    with pg_server(tmp_path) as server:
        yield server


def drop_connections(database_url: str) -> int:
    """Terminate every PostgreSQL backend serving the database; how many there were."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def warm(client: Client, n: int = 20) -> None:
    for _ in range(n):
        assert client(ME)["me"]["email"]


def test_connections_idle_when_dropped_are_replaced_before_use(pg_server: ServerProcess) -> None:
    client = Client(pg_server.url, admin_token(pg_server.url))
    warm(client)
    assert drop_connections(pg_server.database_url) >= 2  # the pool's and the LISTEN one
    time.sleep(IDLE_PING_SECONDS + 1.0)
    for _ in range(20):
        assert client(ME)["me"]["email"]


def test_connections_dropped_while_busy_cost_at_most_one_retryable_answer(
    pg_server: ServerProcess,
) -> None:
    client = Client(pg_server.url, admin_token(pg_server.url))
    warm(client)
    assert drop_connections(pg_server.database_url) >= 2
    failures = []
    for _ in range(20):
        try:
            assert client(ME)["me"]["email"]
        except GraphQLError as error:
            failures.append(error.code)
    assert failures in ([], ["unavailable"]), failures
