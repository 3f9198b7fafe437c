"""Observations whose metric values alone moved: what an executor sends for every node it runs
once per metrics interval (height, peers, disk, CPU), and how they are stored, in one statement
for any number of nodes (services/executors.py `_store_observations`, services/moved_syncs.py).
"""

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Table, Update, bindparam, column, update
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.services import alerts
from nodeplane.controlplane.services.loop_turns import in_steps
from nodeplane.controlplane.services.node_facts import NodeFacts
from nodeplane.controlplane.store.json_rows import json_rows, json_rows_value
from nodeplane.controlplane.store.models import Node
from nodeplane.protocol import ObservedNodeState
from nodeplane.protocol.alerts import METRIC_RULES
from nodeplane.protocol.observed import differs_beyond_metrics, stored_observation

_NODES = cast(Table, Node.__table__)


def only_metric_values_moved(stored: dict[str, Any] | None, new: ObservedNodeState) -> bool:
    """Whether `new` differs from the stored observation in metric values alone (a stored one
    that no longer passes today's rules counts as different)."""
    before = stored_observation(stored)
    return before is not None and not differs_beyond_metrics(before, new)


async def store_metric_values(
    session: AsyncSession,
    moved: list[tuple[NodeFacts, ObservedNodeState, dict[str, Any]]],
    now: datetime,
) -> None:
    """Write observations whose metric values alone moved (what an executor sends once per
    metrics interval for every node it runs) in one statement of the rows' values; the facts
    are moved to what was written, which the alert rules then read."""
    rows: list[dict[str, Any]] = []
    async for fact, observed, wire in in_steps(moved):
        marks, since = alerts.marks_after(fact, observed, now)
        rows.append({"id": fact.id, "observed": wire, "height_marks": marks, "since": since})
        fact.observed, fact.height_marks, fact.heights_since = wire, marks, since
    if session.get_bind().dialect.name == "postgresql":
        sent = (
            {**row, "id": str(row["id"]), "since": row["since"] and row["since"].isoformat()}
            for row in rows
        )
        await session.execute(
            _METRIC_VALUES_POSTGRESQL, {"moved": json_rows_value(sent), "now": now}
        )
        return
    # SQLite's statements are in-process calls: one per row.
    await session.execute(
        _METRIC_VALUES_SQLITE,
        [
            {
                "b_id": r["id"],
                "b_observed": r["observed"],
                "b_now": now,
                "b_marks": r["height_marks"],
                "b_since": r["since"],
            }
            for r in rows
        ],
    )


async def store_and_judge(
    session: AsyncSession,
    moved: list[tuple[NodeFacts, ObservedNodeState, dict[str, Any]]],
    now: datetime,
    executor_names: dict[UUID, str],
) -> None:
    """`store_metric_values`, then the metric rules judged on what was written: nothing a
    phase, a rollback or node_down reads has moved."""
    await store_metric_values(session, moved, now)
    await alerts.evaluate_nodes(
        session,
        [fact for fact, _, _ in moved],
        now,
        executor_names=executor_names,
        rules=METRIC_RULES,
        # As validated: the rules need not validate them again.
        observations={fact.id: observed for fact, observed, _ in moved},
    )


def _metric_values_statement_postgresql() -> Update:
    """One statement whatever the number of nodes, its rows in one JSON parameter
    (store/json_rows.py)."""
    moved = json_rows(
        "moved",
        column("id", _NODES.c.id.type),
        column("observed", _NODES.c.observed.type),
        column("height_marks", _NODES.c.height_marks.type),
        column("since", _NODES.c.heights_since.type),
    )
    return (
        update(_NODES)
        .where(_NODES.c.id == moved.c.id)
        .values(
            observed=moved.c.observed,
            observed_at=bindparam("now", type_=_NODES.c.observed_at.type),
            height_marks=moved.c.height_marks,
            heights_since=moved.c.since,
        )
    )


_METRIC_VALUES_POSTGRESQL = _metric_values_statement_postgresql()
_METRIC_VALUES_SQLITE = (
    update(_NODES)
    .where(_NODES.c.id == bindparam("b_id"))
    .values(
        observed=bindparam("b_observed", type_=_NODES.c.observed.type),
        observed_at=bindparam("b_now", type_=_NODES.c.observed_at.type),
        height_marks=bindparam("b_marks", type_=_NODES.c.height_marks.type),
        heights_since=bindparam("b_since", type_=_NODES.c.heights_since.type),
    )
)
