"""Issue 10, part 5: the events feed prunes the fleet's chatter past an age or a per-organization
count, on a timer, and keeps the audit trail (every event a person caused, and the security
records of refused executors). Real servers on SQLite and PostgreSQL; events are aged by hand in
the database, since waiting days is not an option, and the server's own pruner deletes them
(tests/support/server.py runs it every second)."""

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select, text, update

from nodeplane.controlplane.services.event_retention import prunable
from nodeplane.controlplane.store import models
from nodeplane.protocol import (
    EventLevel,
    ProcessStatus,
    RuntimeEvent,
)
from tests.conftest import new_database_url
from tests.support.calls import act, deploy
from tests.support.db import ALERT_EVENTS, HEARTBEAT_EVENTS, connect
from tests.support.fleet import FakeExecutor, Org, make_org, unique
from tests.support.gql import Client
from tests.support.migrations import empty_database, upgrade
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess, drop_pg_database

# Server processes of its own (capped_server) as well as the shared one.
pytestmark = pytest.mark.server

EVENTS = models.Event.__table__
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


def stored_feed(database_url: str, org_id: str) -> list[tuple[int, str, str, str]]:
    """`feed` in a connection of its own."""
    with connect(database_url) as conn:
        return feed(conn, org_id)


def feed(conn: Connection, org_id: str) -> list[tuple[int, str, str, str]]:
    """(id, type, actor type, message) of every stored event of the organization, oldest first."""
    rows = conn.execute(
        select(EVENTS.c.id, EVENTS.c.type, EVENTS.c.actor_type, EVENTS.c.message)
        .where(EVENTS.c.organization_id == uuid.UUID(org_id))
        .order_by(EVENTS.c.id)
    )
    return [(r.id, r.type, r.actor_type, r.message) for r in rows]


def crashed(node_id: str, message: str) -> RuntimeEvent:
    return RuntimeEvent(
        type="node.process.crashed",
        level=EventLevel.ERROR,
        message=message,
        node_id=uuid.UUID(node_id),
    )


def busy_node(org: Org, server_url: str) -> tuple[FakeExecutor, str]:
    """A node that was created, observed running and stopped by its owner: events of every
    kind (the owner's, the executor's, the control plane's own)."""
    executor = FakeExecutor(server_url, org.executor_key())
    executor.sync()
    node = deploy(org.owner, executor, unique("n"))
    executor.observe(node["id"], 1, ProcessStatus.RUNNING)
    act(org.owner, node["id"], "STOP")
    executor.observe(node["id"], 2, ProcessStatus.STOPPED)
    return executor, node["id"]


def test_events_past_the_age_go_and_the_audit_trail_stays(org: Org, server: ServerProcess) -> None:
    executor, node_id = busy_node(org, server.url)
    executor.report(crashed(node_id, "old crash 1"), crashed(node_id, "old crash 2"))
    long_ago = datetime.now(UTC) - timedelta(days=31)
    with connect(server.database_url) as conn:
        # A refused executor instance: a security record, kept however old.
        conn.execute(
            insert(EVENTS).values(
                organization_id=uuid.UUID(org.id),
                type="executor.instance_refused",
                level="warn",
                source="control_plane",
                message="refused a second instance",
                actor_type="executor",
                actor="executor:x",
                payload={},
                created_at=long_ago,
            )
        )
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.organization_id == uuid.UUID(org.id))
            .values(created_at=long_ago)
        )
        conn.commit()
        before = feed(conn, org.id)
    by_people = [e for e in before if e[2] == "user"]
    kinds = {e[1] for e in before}
    # The feed had all three kinds to begin with.
    assert {"node.created", "node.lifecycle.requested"} <= {e[1] for e in by_people}
    assert {"node.process.crashed", "node.lifecycle.transition"} <= kinds
    kept = [e for e in before if e[2] == "user" or e[1] == "executor.instance_refused"]

    last_aged = before[-1][0]

    def now_stored() -> list[tuple[int, str, str, str]]:
        # The sweeper may note the test's executor going quiet meanwhile: news, not old.
        return [
            e
            for e in stored_feed(server.database_url, org.id)
            if not (
                e[0] > last_aged and (e[1] in HEARTBEAT_EVENTS or e[1].startswith(ALERT_EVENTS))
            )
        ]

    assert wait_until(lambda: now_stored() == kept), now_stored()
    # New chatter is not old: it stays.
    executor.report(crashed(node_id, "fresh crash"))
    time.sleep(2.5)
    after = now_stored()
    assert after[: len(kept)] == kept
    assert [e[3] for e in after[len(kept) :]] == ["fresh crash"]


@pytest.fixture(params=["sqlite", "postgresql"])
def capped_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server that keeps 5 prunable events per organization and no age limit."""
    workdir = tmp_path_factory.mktemp(f"capped-{request.param}")
    url = new_database_url(request.param, workdir)
    proc = ServerProcess(
        database_url=url,
        workdir=workdir,
        extra_env={
            "NODEPLANE_EVENT_RETENTION_COUNT": "5",
            "NODEPLANE_EVENT_RETENTION_DAYS": "0",
            # Small batches, so a round deletes in several transactions.
            "NODEPLANE_EVENT_PRUNE_BATCH": "3",
        },
    )
    proc.start()
    yield proc
    proc.stop()
    if request.param == "postgresql":
        drop_pg_database(url)


def test_each_organization_keeps_its_newest_events_up_to_the_count(
    capped_server: ServerProcess,
) -> None:
    token = Client(capped_server.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"][
        "token"
    ]
    admin = Client(capped_server.url, token)
    big, small = make_org(capped_server.url, admin), make_org(capped_server.url, admin)
    big_executor, big_node = busy_node(big, capped_server.url)
    small_executor, small_node = busy_node(small, capped_server.url)
    messages = [f"crash {i}" for i in range(12)]
    for message in messages:
        big_executor.report(crashed(big_node, message))
    small_executor.report(crashed(small_node, "the only crash"))

    def prunable_of(org: Org) -> list[tuple[int, str, str, str]]:
        return [e for e in stored_feed(capped_server.database_url, org.id) if e[2] != "user"]

    assert wait_until(lambda: len(prunable_of(big)) == 5), prunable_of(big)
    assert [e[3] for e in prunable_of(big)] == messages[-5:]
    big_feed = stored_feed(capped_server.database_url, big.id)
    small_feed = stored_feed(capped_server.database_url, small.id)
    # What the owner did is all there, and the small organization lost nothing but what
    # exceeded its own 5.
    assert {e[1] for e in big_feed if e[2] == "user"} >= {
        "node.created",
        "node.lifecycle.requested",
    }
    small_prunable = [e for e in small_feed if e[2] != "user"]
    assert len(small_prunable) == 5 and small_prunable[-1][3] == "the only crash"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_pruners_queries_use_the_partial_indexes(backend: str, tmp_path: Path) -> None:
    """A round that finds nothing old must not read the audit trail: the pruner's queries are
    answered from the partial indexes of prunable events (their condition is written so that
    both databases can match it)."""
    with empty_database(backend, tmp_path) as url:
        upgrade(url, "head")
        orgs = [uuid.uuid4() for _ in range(3)]
        cutoff = datetime.now(UTC) - timedelta(days=30)
        age = (
            select(EVENTS.c.id)
            .where(prunable(), EVENTS.c.created_at < cutoff)
            .order_by(EVENTS.c.created_at, EVENTS.c.id)
            .limit(100)
        )
        by_org = (
            select(EVENTS.c.created_at, EVENTS.c.id)
            .where(EVENTS.c.organization_id == orgs[0], prunable())
            .order_by(EVENTS.c.created_at.desc(), EVENTS.c.id.desc())
            .offset(4)
            .limit(1)
        )
        with connect(url) as conn:
            # A feed the planner can weigh: three organizations, half of it people's doings.
            start = datetime.now(UTC) - timedelta(days=60)
            conn.execute(
                insert(EVENTS),
                [
                    {
                        "organization_id": orgs[i % 3],
                        "type": "node.updated" if i % 2 else "node.lifecycle.transition",
                        "level": "info",
                        "source": "control_plane",
                        "message": f"event {i}",
                        "actor_type": "user" if i % 2 else "executor",
                        "actor": "someone",
                        "payload": {},
                        "created_at": start + timedelta(minutes=i),
                    }
                    for i in range(6000)
                ],
            )
            conn.commit()
            conn.execute(text("ANALYZE"))
            explain = "EXPLAIN " if backend == "postgresql" else "EXPLAIN QUERY PLAN "
            plans = {}
            for name, statement in {"age": age, "by_org": by_org}.items():
                compiled = statement.compile(
                    dialect=conn.dialect, compile_kwargs={"literal_binds": True}
                )
                plans[name] = " ".join(
                    str(row[-1]) for row in conn.execute(text(explain + str(compiled)))
                )
    # Either partial index serves either query (the planner weighs them by the data); what
    # matters is that neither reads rows a person caused.
    for name, plan in plans.items():
        assert "ix_events_prunable_" in plan, (name, plan)
        assert "Seq Scan" not in plan, (name, plan)
