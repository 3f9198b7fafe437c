"""Read-only looks into a test server's database, for checks the API cannot make."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, create_engine, func, inspect, select, text

from nodeplane.controlplane.store import models
from nodeplane.controlplane.store.database import sync_url

# Heartbeat bookkeeping that the server's sweeper may write at any time, unasked.
HEARTBEAT_EVENTS = ("executor.disconnected", "executor.reconnected")
# So are alerts about an executor (executor_offline opens with the disconnect): alert events
# with no node.
ALERT_EVENTS = "notification.alert."


def heartbeat_noise(event: dict[str, Any]) -> bool:
    """Whether an event (as the API shows it) is the sweeper's, written unasked."""
    return event["type"] in HEARTBEAT_EVENTS or (
        event["type"].startswith(ALERT_EVENTS) and event.get("nodeId") is None
    )


@contextmanager
def connect(database_url: str) -> Iterator[Connection]:
    """A synchronous connection to the server's database (SQLite file or PostgreSQL)."""
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def cells_containing(database_url: str, needle: str) -> list[tuple[str, str]]:
    """(table, column) of every cell, in every table, whose text contains `needle`."""
    found: list[tuple[str, str]] = []
    with connect(database_url) as conn:
        for table in inspect(conn).get_table_names():
            result = conn.execute(text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result:
                found += [
                    (table, col)
                    for col, value in zip(columns, row, strict=True)
                    if value is not None and needle in str(value)
                ]
    return found


def api_key_cells(database_url: str, key_id: str) -> dict[str, object]:
    """The stored row of one API key, column by column."""
    with connect(database_url) as conn:
        table = models.Base.metadata.tables["api_keys"]
        row = conn.execute(select(table).where(table.c.id == uuid.UUID(key_id))).one()
        return dict(row._mapping)


def org_row_counts(database_url: str, organization_id: str) -> dict[str, int]:
    """How many nodes, revisions, events (heartbeat noise aside), keys, executors and invites
    an organization has in the database."""
    org = uuid.UUID(organization_id)
    tables = models.Base.metadata.tables
    with connect(database_url) as conn:

        def count(name: str, *extra: ColumnElement[bool]) -> int:
            table = tables[name]
            query = select(func.count()).select_from(table).where(table.c.organization_id == org)
            return int(conn.execute(query.where(*extra)).scalar_one())

        return {
            "nodes": count("nodes"),
            "spec_revisions": count("spec_revisions"),
            "events": count(
                "events",
                tables["events"].c.type.notin_(HEARTBEAT_EVENTS),
                ~and_(
                    tables["events"].c.type.startswith(ALERT_EVENTS),
                    tables["events"].c.node_id.is_(None),
                ),
            ),
            "api_keys": count("api_keys"),
            "executors": count("executors"),
            "invites": count("invites"),
        }
