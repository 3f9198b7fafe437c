"""Helpers that turn store rows into API types with what they need from around them."""

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from nodeplane.controlplane.api.context import Context
from nodeplane.controlplane.api.types import Executor, Me, Node, Organization
from nodeplane.controlplane.services import accounts
from nodeplane.controlplane.services.executors import is_online, visible_to
from nodeplane.controlplane.store import models


def _loaded_executors(session: AsyncSession, ids: set[UUID]) -> dict[UUID, models.Executor]:
    """The executors of `ids` the session has already loaded (a writer's lock reads the node's
    with it): a SELECT of them would return these very objects, unchanged."""
    found: dict[UUID, models.Executor] = {}
    for executor_id in ids:
        loaded = session.identity_map.get(identity_key(models.Executor, executor_id))
        # An expired one would be loaded again on access, which async code cannot do.
        if isinstance(loaded, models.Executor) and not inspect(loaded).expired_attributes:
            found[executor_id] = loaded
    return found


async def node_views(
    session: AsyncSession, ctx: Context, rows: Sequence[models.Node]
) -> list[Node]:
    """API nodes, each flagged stale when its executor is offline, with its executor when the
    caller may see it."""
    executors = _loaded_executors(session, {r.executor_id for r in rows})
    if missing := {r.executor_id for r in rows} - executors.keys():
        executors.update(
            (e.id, e)
            for e in await session.scalars(
                select(models.Executor).where(models.Executor.id.in_(missing))
            )
        )
    timeout = ctx.settings.heartbeat_timeout
    p = ctx.principal
    views = {
        i: Executor.from_row(e, timeout)
        for i, e in executors.items()
        if p is not None and visible_to(p, e)
    }
    return [
        Node.from_row(
            r,
            r.executor_id in executors and is_online(executors[r.executor_id], timeout),
            views.get(r.executor_id),
        )
        for r in rows
    ]


async def me_view(session: AsyncSession, ctx: Context) -> Me | None:
    """The caller as the API shows it."""
    p = ctx.principal
    if p is None:
        return None
    org = await accounts.get_organization(session, p)
    return Me(
        id=p.user_id,
        email=p.label if not p.is_executor else None,
        role=p.role,
        is_system_admin=p.is_system_admin,
        organization=Organization.from_row(org) if org else None,
        executor_id=p.executor_id,
        kind=p.kind,
    )
