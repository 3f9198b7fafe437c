"""Schema migrations on SQLite and PostgreSQL: head matches the models, every step goes down and
up again, and each upgrade keeps (or correctly transforms) the data of the schema before it, with a
real server starting on the result."""

import importlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from nodeplane.controlplane.auth.secrets import hash_password, token_digest
from nodeplane.controlplane.store import models
from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.db import connect
from tests.support.fleet import FakeExecutor
from tests.support.gql import Client
from tests.support.migrations import (
    downgrade,
    empty_database,
    schema_drift,
    seed,
    table_names,
    upgrade,
)
from tests.support.server import ServerProcess

ME = "{ me { email role organization { name } } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
ACCEPT = "mutation($t: String!, $p: String) { acceptInvite(token: $t, password: $p) { me { email role } } }"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def test_head_matches_the_models_and_every_step_goes_down_and_up(database: str) -> None:
    upgrade(database, "head")
    assert schema_drift(database) == []
    downgrade(database, "base")
    assert table_names(database) <= {"alembic_version"}
    upgrade(database, "head")
    assert schema_drift(database) == []


@pytest.mark.server  # runs the upgraded control plane
def test_0002_keeps_accounts_and_turns_lockouts_into_per_account_counts(
    database: str, tmp_path: Path
) -> None:
    upgrade(database, "0001")
    now = datetime.now(UTC)
    org_id, user_id, admin_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    session_token, invite_token = f"nps_{uuid.uuid4().hex}", f"npi_{uuid.uuid4().hex}"
    seed(
        database,
        {
            "organizations": [{"id": org_id, "name": "acme", "created_at": now}],
            "users": [
                {
                    "id": user_id,
                    "email": "ops@acme.example",
                    "password_hash": hash_password("ops-password-1"),
                    "is_system_admin": False,
                    "created_at": now,
                },
                {
                    "id": admin_id,
                    "email": "admin@example.test",
                    "password_hash": hash_password("admin-password-1"),
                    "is_system_admin": True,
                    "created_at": now,
                },
            ],
            "members": [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org_id,
                    "user_id": user_id,
                    "role": "owner",
                    "created_at": now,
                }
            ],
            "sessions": [
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "organization_id": org_id,
                    "token_hash": token_digest(session_token),
                    "created_at": now,
                    "expires_at": now + timedelta(days=1),
                    "last_used_at": None,
                }
            ],
            "invites": [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org_id,
                    "email": "new@acme.example",
                    "role": "admin",
                    "token_hash": token_digest(invite_token),
                    "created_by_id": user_id,
                    "created_at": now,
                    "expires_at": now + timedelta(days=7),
                    "accepted_at": None,
                }
            ],
            # The old per-email lock-out: ops is locked for everyone, someone else has counts.
            "login_throttle": [
                {
                    "email": "ops@acme.example",
                    "failures": 5,
                    "window_started_at": now - timedelta(minutes=1),
                    "locked_until": now + timedelta(minutes=14),
                },
                {
                    "email": "someone@acme.example",
                    "failures": 3,
                    "window_started_at": now - timedelta(minutes=2),
                    "locked_until": None,
                },
                {
                    "email": "quiet@acme.example",
                    "failures": 0,
                    "window_started_at": now - timedelta(minutes=3),
                    "locked_until": None,
                },
            ],
        },
    )

    # The server's own start-up migrates to head.
    server = ServerProcess(database_url=database, workdir=tmp_path / "server")
    server.start()
    try:
        assert schema_drift(database) == []
        assert "login_throttle" not in table_names(database)
        throttle = models.SignInThrottle.__table__
        with connect(database) as conn:
            carried = {
                (r.scope, r.key): (r.failures, r.blocked_until)
                for r in conn.execute(select(throttle))
            }
        assert carried == {
            ("account", "ops@acme.example"): (5, None),
            ("account", "someone@acme.example"): (3, None),
        }
        # Sessions, accounts, memberships and invites made before the upgrade work after it.
        me = Client(server.url, session_token)(ME)["me"]
        assert me == {
            "email": "ops@acme.example",
            "role": "OWNER",
            "organization": {"name": "acme"},
        }
        # The old lock-out is gone: the account signs in at once.
        token = Client(server.url)(LOGIN, {"e": "ops@acme.example", "p": "ops-password-1"})
        assert Client(server.url, token["login"]["token"])(ME)["me"]["email"] == "ops@acme.example"
        joined = Client(server.url)(ACCEPT, {"t": invite_token, "p": "new-password-1"})
        assert joined["acceptInvite"]["me"] == {"email": "new@acme.example", "role": "ADMIN"}
    finally:
        server.stop()


@pytest.mark.server  # runs the upgraded control plane
def test_0003_keeps_executors_working_and_starts_recording_their_instance(
    database: str, tmp_path: Path
) -> None:
    upgrade(database, "0002")
    now = datetime.now(UTC)
    org_id, executor_id = uuid.uuid4(), uuid.uuid4()
    secret = f"npk_{uuid.uuid4().hex}"
    seed(
        database,
        {
            "organizations": [{"id": org_id, "name": "acme", "created_at": now}],
            "executors": [
                {
                    "id": executor_id,
                    "organization_id": org_id,
                    "name": "host-a",
                    "kind": "agent",
                    "version": "0.1.0",
                    "capabilities": {},
                    "resources": {},
                    "last_sync_at": now - timedelta(minutes=5),
                    "connected": False,
                    "created_at": now - timedelta(days=1),
                }
            ],
            "api_keys": [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org_id,
                    "name": "host-a key",
                    "kind": "executor",
                    "prefix": secret[:10],
                    "token_hash": token_digest(secret),
                    "created_by_id": None,
                    "executor_id": executor_id,
                    "enabled": True,
                    "expires_at": None,
                    "last_used_at": None,
                    "created_at": now - timedelta(days=1),
                    "revoked_at": None,
                }
            ],
        },
    )

    server = ServerProcess(database_url=database, workdir=tmp_path / "server")
    server.start()
    try:
        assert schema_drift(database) == []
        executors = models.Executor.__table__
        with connect(database) as conn:
            row = conn.execute(select(executors).where(executors.c.id == executor_id)).one()
        assert (row.name, row.instance_id, row.instance_seen_at) == ("host-a", None, None)
        # The executor made before the upgrade syncs with its old key, as an agent older than
        # the rule (no instance id) and as a new one, whose instance is recorded from then on.
        FakeExecutor(server.url, secret, name="host-a").sync()
        live = FakeExecutor(server.url, secret, name="host-a", instance_id=uuid.uuid4())
        assert live.sync()["executor"]["id"] == str(executor_id)
        with connect(database) as conn:
            row = conn.execute(select(executors).where(executors.c.id == executor_id)).one()
        assert row.instance_id == live.instance_id and row.instance_seen_at is not None
        second = FakeExecutor(server.url, secret, name="host-a", instance_id=uuid.uuid4())
        with pytest.raises(ControlPlaneError) as err:
            second.sync()
        assert err.value.code == "executor_instance_conflict"
    finally:
        server.stop()


@pytest.mark.server  # runs the upgraded control plane
def test_0004_keeps_nodes_and_starts_alerting_on_them(database: str, tmp_path: Path) -> None:
    upgrade(database, "0003")
    now = datetime.now(UTC)
    org_id, executor_id, node_id, user_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    secret, session_token = f"npk_{uuid.uuid4().hex}", f"nps_{uuid.uuid4().hex}"
    spec = {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
    }
    running = {"revision": 1, "processes": [{"role": "node", "status": "running", "height": 9}]}
    seed(
        database,
        {
            "organizations": [{"id": org_id, "name": "acme", "created_at": now}],
            "users": [
                {
                    "id": user_id,
                    "email": "ops@acme.example",
                    "password_hash": hash_password("ops-password-1"),
                    "is_system_admin": False,
                    "created_at": now,
                }
            ],
            "members": [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org_id,
                    "user_id": user_id,
                    "role": "owner",
                    "created_at": now,
                }
            ],
            "sessions": [
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "organization_id": org_id,
                    "token_hash": token_digest(session_token),
                    "created_at": now,
                    "expires_at": now + timedelta(days=1),
                    "last_used_at": None,
                }
            ],
            "executors": [
                {
                    "id": executor_id,
                    "organization_id": org_id,
                    "name": "host-a",
                    "kind": "agent",
                    "version": "0.1.0",
                    "capabilities": {},
                    "resources": {},
                    "last_sync_at": now,
                    "connected": True,
                    "created_at": now - timedelta(days=1),
                    "instance_id": None,
                    "instance_seen_at": None,
                }
            ],
            "api_keys": [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org_id,
                    "name": "host-a key",
                    "kind": "executor",
                    "prefix": secret[:10],
                    "token_hash": token_digest(secret),
                    "created_by_id": None,
                    "executor_id": executor_id,
                    "enabled": True,
                    "expires_at": None,
                    "last_used_at": None,
                    "created_at": now - timedelta(days=1),
                    "revoked_at": None,
                }
            ],
            "nodes": [
                {
                    "id": node_id,
                    "organization_id": org_id,
                    "executor_id": executor_id,
                    "name": "ltc-a",
                    "chain": "litecoin",
                    "network": "regtest",
                    "spec": spec,
                    "revision": 1,
                    "observed": running,
                    "observed_at": now,
                    "deleted_at": None,
                    "retain_data": False,
                    "created_at": now - timedelta(days=1),
                    "updated_at": now - timedelta(days=1),
                }
            ],
        },
    )

    server = ServerProcess(database_url=database, workdir=tmp_path / "server")
    server.start()
    try:
        assert schema_drift(database) == []
        assert {"incidents", "alert_settings"} <= table_names(database)
        nodes = models.Node.__table__
        with connect(database) as conn:
            row = conn.execute(select(nodes).where(nodes.c.id == node_id)).one()
        assert (row.name, row.observed, row.height_marks, row.heights_since) == (
            "ltc-a",
            running,
            None,
            None,
        )
        owner = Client(server.url, session_token)
        incidents = "{ incidents { items { rule subjectName state } } openIncidentCount }"
        assert owner(incidents) == {"incidents": {"items": []}, "openIncidentCount": 0}
        settings = owner("{ alertSettings { rule enabled threshold } }")["alertSettings"]
        assert {"rule": "DISK_USAGE", "enabled": True, "threshold": 85.0} in settings
        # The node made before the upgrade is judged from its next changed report on.
        agent = FakeExecutor(server.url, secret, name="host-a")
        agent.sync(
            {
                str(node_id): ObservedNodeState(
                    revision=1,
                    processes=[ObservedProcess(role="node", status=ProcessStatus.STOPPED)],
                )
            }
        )
        assert owner(incidents) == {
            "incidents": {
                "items": [{"rule": "NODE_DOWN", "subjectName": "ltc-a", "state": "OPEN"}]
            },
            "openIncidentCount": 1,
        }
        agent.sync(
            {
                str(node_id): ObservedNodeState(
                    revision=1,
                    processes=[
                        ObservedProcess(role="node", status=ProcessStatus.RUNNING, height=10)
                    ],
                )
            }
        )
        with connect(database) as conn:
            row = conn.execute(select(nodes).where(nodes.c.id == node_id)).one()
        assert row.height_marks["node"]["height"] == 10 and row.heights_since is not None
        assert owner(incidents)["openIncidentCount"] == 0
    finally:
        server.stop()


@pytest.mark.server  # runs the upgraded control plane
def test_0005_adds_webhooks_and_keeps_everything_before_them(database: str, tmp_path: Path) -> None:
    # The schema this migration follows (its down_revision), whatever it is rebased onto.
    webhooks_migration = importlib.import_module(
        "nodeplane.controlplane.store.migrations.versions.0005_webhooks"
    )
    upgrade(database, webhooks_migration.down_revision)
    now = datetime.now(UTC)
    org_id, user_id = uuid.uuid4(), uuid.uuid4()
    session_token = f"nps_{uuid.uuid4().hex}"
    seed(
        database,
        {
            "organizations": [{"id": org_id, "name": "acme", "created_at": now}],
            "users": [
                {
                    "id": user_id,
                    "email": "ops@acme.example",
                    "password_hash": hash_password("ops-password-1"),
                    "is_system_admin": False,
                    "created_at": now,
                }
            ],
            "members": [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org_id,
                    "user_id": user_id,
                    "role": "owner",
                    "created_at": now,
                }
            ],
            "sessions": [
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "organization_id": org_id,
                    "token_hash": token_digest(session_token),
                    "created_at": now,
                    "expires_at": now + timedelta(days=1),
                    "last_used_at": None,
                }
            ],
            "events": [
                {
                    "organization_id": org_id,
                    "type": "node.created",
                    "level": "info",
                    "source": "control_plane",
                    "message": "ops created node n1",
                    "actor_type": "user",
                    "actor_id": user_id,
                    "actor": "ops@acme.example",
                    "node_id": None,
                    "node_name": "n1",
                    "executor_id": None,
                    "payload": {},
                    "created_at": now,
                }
            ],
        },
    )
    assert "webhook_endpoints" not in table_names(database)

    server = ServerProcess(database_url=database, workdir=tmp_path / "server")
    server.start()
    try:
        assert schema_drift(database) == []
        assert {"webhook_endpoints", "webhook_deliveries", "webhook_attempts"} <= table_names(
            database
        )
        owner = Client(server.url, session_token)
        assert owner(ME)["me"]["organization"]["name"] == "acme"
        events = owner("{ events { items { type message } } }")["events"]["items"]
        assert {"type": "node.created", "message": "ops created node n1"} in events
        assert owner("{ webhookEndpoints { id } }")["webhookEndpoints"] == []
        created = owner(
            'mutation { createWebhookEndpoint(input: {url: "https://hooks.example.com/a"}) '
            "{ secret endpoint { id eventTypes } } }"
        )["createWebhookEndpoint"]
        assert created["endpoint"]["eventTypes"] == [
            "notification.alert.opened",
            "notification.alert.resolved",
        ]
        delivery = owner(
            "mutation($id: UUID!) { testWebhook(id: $id) { id status } }",
            {"id": created["endpoint"]["id"]},
        )["testWebhook"]
        assert delivery["status"] == "PENDING"
    finally:
        server.stop()
    # And back down to the schema before, with what it held.
    downgrade(database, webhooks_migration.down_revision)
    assert "webhook_endpoints" not in table_names(database)
    with connect(database) as conn:
        users = models.User.__table__
        assert conn.execute(select(users.c.email)).scalars().all() == ["ops@acme.example"]


def test_0006_keeps_every_event_and_indexes_the_prunable_ones(
    database: str, tmp_path: Path
) -> None:
    upgrade(database, "0005")
    now = datetime.now(UTC)
    org_id = uuid.uuid4()
    events = [
        {
            "organization_id": org_id,
            "type": kind,
            "level": "info",
            "source": source,
            "message": f"{kind} {i}",
            "actor_type": actor,
            "actor_id": None,
            "actor": "someone",
            "node_id": None,
            "node_name": None,
            "executor_id": None,
            "payload": {"i": i},
            "created_at": now - timedelta(days=40 - i),
        }
        for i, (kind, source, actor) in enumerate(
            [
                ("node.created", "control_plane", "user"),
                ("node.process.crashed", "runtime", "executor"),
                ("node.lifecycle.transition", "control_plane", "executor"),
                ("executor.disconnected", "control_plane", "system"),
            ]
        )
    ]
    seed(database, {"organizations": [{"id": org_id, "name": "acme", "created_at": now}]})
    seed(database, {"events": events})
    upgrade(database, "0006")
    with connect(database) as conn:
        kept = conn.execute(
            select(models.Event.__table__.c.type, models.Event.__table__.c.payload).order_by(
                models.Event.__table__.c.id
            )
        ).all()
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("events")}
    assert [(row.type, row.payload) for row in kept] == [(e["type"], e["payload"]) for e in events]
    assert {"ix_events_prunable_age", "ix_events_prunable_org"} <= indexes
    downgrade(database, "0005")
    with connect(database) as conn:
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("events")}
        assert conn.execute(select(func.count()).select_from(models.Event.__table__)).scalar() == 4
    assert not indexes & {"ix_events_prunable_age", "ix_events_prunable_org"}
