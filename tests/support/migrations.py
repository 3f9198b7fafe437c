"""Migration tests' building blocks: a database at any revision, rows written in that revision's
shape, and the difference between the migrated schema and the models.

Upgrade tests follow one pattern: bring an empty database to the revision before yours with
`upgrade`, `seed` it with rows as that revision stored them, then start a real server on it (its
start-up migrates to head) and check the rows through the API and the database.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert

from nodeplane.controlplane.store.database import sync_url
from nodeplane.controlplane.store.migrate import alembic_config
from nodeplane.controlplane.store.models import Base
from tests.support.server import create_pg_database, drop_pg_database


@contextmanager
def empty_database(backend: str, directory: Path) -> Iterator[str]:
    """The URL of a new, empty database of `backend`, dropped afterwards on PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'migrations.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def upgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` up to `revision` (or "head")."""
    _run(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (or "base")."""
    _run(url, lambda cfg: command.downgrade(cfg, revision))


def _run(url: str, step: Any) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            step(cfg)
            conn.commit()
    finally:
        engine.dispose()


def _stored(value: Any, dialect: str) -> Any:
    # Reflected SQLite columns take plain values: UTC times without an offset (store/types.py)
    # and UUIDs as the 32 hex digits sqlalchemy's Uuid type writes there.
    if dialect == "sqlite" and isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if dialect == "sqlite" and isinstance(value, uuid.UUID):
        return value.hex
    return value


def seed(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Insert rows, table by table in the given order, into the schema the database has now."""
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            meta = MetaData()
            meta.reflect(conn)
            for table, values in rows.items():
                stored = [
                    {k: _stored(v, engine.dialect.name) for k, v in r.items()} for r in values
                ]
                conn.execute(insert(meta.tables[table]), stored)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    """The tables the database has now."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            meta = MetaData()
            meta.reflect(conn)
            return set(meta.tables)
    finally:
        engine.dispose()


def schema_drift(url: str) -> list[Any]:
    """What differs between the database's schema and the models (empty when in step)."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            diffs: list[Any] = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            return diffs
    finally:
        engine.dispose()
