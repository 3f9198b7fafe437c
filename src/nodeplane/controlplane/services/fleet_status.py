"""The whole fleet's state in a few set-based reads, for operator-level views (`/metrics`).

Unlike every other read of the services layer, this one is not scoped to a caller: it covers
every organization, so it is reached only through the metrics endpoint's own access rule
(controlplane/metrics/endpoint.py), never through a user's session or an API key. Phase and
online status come from the same functions the API uses (`phase_of`, `is_online`), so the
numbers match what the API says of the same nodes and executors.
"""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.services.executors import is_online
from nodeplane.controlplane.services.nodes import observed_of, phase_of
from nodeplane.controlplane.store.models import Executor, Node, Organization
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import NodePhase, ObservedProcess


@dataclass(frozen=True)
class ExecutorStatus:
    """One executor as the API would show it."""

    id: UUID
    organization: str
    name: str
    kind: str
    online: bool
    last_sync_age_seconds: float | None
    node_count: int


@dataclass(frozen=True)
class NodeStatus:
    """One node as the API would show it; `processes` is empty before the first observation."""

    id: UUID
    organization: str
    name: str
    executor: str
    chain: str
    network: str
    phase: NodePhase
    stale: bool
    last_observed_age_seconds: float | None
    processes: tuple[ObservedProcess, ...]


@dataclass(frozen=True)
class FleetStatus:
    """Every executor and node of every organization, read at one moment."""

    executors: list[ExecutorStatus]
    nodes: list[NodeStatus]


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


async def read_fleet_status(
    session: AsyncSession, heartbeat_timeout: float, now: datetime | None = None
) -> FleetStatus:
    """The fleet in three reads (executors, node counts, nodes), whatever its size."""
    now = now or utcnow()
    executor_rows = (
        await session.execute(
            select(Executor, Organization.name)
            .join(Organization, Organization.id == Executor.organization_id)
            .order_by(Organization.name, Executor.name)
        )
    ).all()
    # A comprehension, not dict(): a Result has keys() and would be read as a mapping.
    counts: dict[UUID, int] = {
        executor_id: count
        for executor_id, count in (
            await session.execute(select(Node.executor_id, func.count()).group_by(Node.executor_id))
        )
    }
    executors: list[ExecutorStatus] = []
    by_id: dict[UUID, ExecutorStatus] = {}
    for row, organization in executor_rows:
        status = ExecutorStatus(
            id=row.id,
            organization=organization,
            name=row.name,
            kind=row.kind,
            online=is_online(row, heartbeat_timeout, now),
            last_sync_age_seconds=_age(now, row.last_sync_at),
            node_count=counts.get(row.id, 0),
        )
        executors.append(status)
        by_id[row.id] = status

    nodes: list[NodeStatus] = []
    for node in await session.scalars(select(Node).order_by(Node.organization_id, Node.name)):
        executor = by_id.get(node.executor_id)
        if executor is None:  # committed between the two reads on a database without snapshots
            continue
        observed = observed_of(node)
        nodes.append(
            NodeStatus(
                id=node.id,
                organization=executor.organization,
                name=node.name,
                executor=executor.name,
                chain=node.chain,
                network=node.network,
                phase=phase_of(node),
                stale=not executor.online,
                last_observed_age_seconds=_age(now, node.observed_at),
                processes=tuple(observed.processes) if observed else (),
            )
        )
    return FleetStatus(executors=executors, nodes=nodes)
