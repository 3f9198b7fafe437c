"""Many rows as one bound parameter, for statements PostgreSQL runs on hot paths.

A VALUES list or an array per column makes SQLAlchemy compile, and psycopg dump in Python, one
bound value per cell: a statement of a few thousand values cost the event loop tens of
milliseconds, and its text changed with the row count, so it was never prepared. Sent as one
JSON text and read back by `jsonb_to_recordset`, the statement is the same whatever the count
(compiled once, prepared by PostgreSQL) and the rows are encoded by msgspec's JSON encoder (about
a seventh of the standard library's time for a batch of observations).
"""

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from sqlalchemy import Text, bindparam, cast, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import TableValuedAlias


def json_rows(name: str, *columns: ColumnClause[Any]) -> TableValuedAlias:
    """A derived table `name`(columns) read from the bound parameter `name` (PostgreSQL only),
    whose value `json_rows_value` makes."""
    return (
        func.jsonb_to_recordset(cast(bindparam(name, type_=Text), JSONB))
        .table_valued(*columns)
        .render_derived(name=name, with_types=True)
    )


def json_rows_value(rows: Iterable[Mapping[str, Any]]) -> str:
    """The parameter of a `json_rows` table: rows of JSON values keyed by column name."""
    return _encode(list(rows)).decode()


_encode = msgspec.json.Encoder().encode
