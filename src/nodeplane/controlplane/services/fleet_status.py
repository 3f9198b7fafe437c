"""The whole fleet's state in a few set-based reads, for operator-level views (`/metrics`).

Unlike every other read of the services layer, this one is not scoped to a caller: it covers
every organization, so it is reached only through the metrics endpoint's own access rule
(controlplane/metrics/endpoint.py), never through a user's session or an API key. Phase and
online status come from the same functions the API uses (`derive_node_phase`, called as
`phase_of` calls it, and `synced_within`, as `is_online` calls it), so the numbers match what
the API says of the same nodes and executors.
"""

import asyncio
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.services.executors import synced_within
from nodeplane.controlplane.store.models import Executor, Node, Organization
from nodeplane.controlplane.store.types import utcnow
from nodeplane.protocol import DesiredState, NodePhase, ObservedProcess
from nodeplane.protocol.observed import stored_observation
from nodeplane.protocol.phase import derive_node_phase


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


# Rows read per fetch (and statuses built per turn of the event loop).
NODES_PER_FETCH = 200


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


async def read_fleet_status(
    session: AsyncSession, heartbeat_timeout: float, now: datetime | None = None
) -> FleetStatus:
    """The fleet in three reads (executors, node counts, nodes), whatever its size."""
    now = now or utcnow()
    # Columns, not whole rows: what each executor carries besides (capabilities, resources)
    # took 130-180 ms of the event loop to decode for 1,500 executors.
    executor_rows = (
        await session.execute(
            select(
                Executor.id,
                Organization.name,
                Executor.name,
                Executor.kind,
                Executor.last_sync_at,
            )
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
    for executor_id, organization, name, kind, last_sync_at in executor_rows:
        status = ExecutorStatus(
            id=executor_id,
            organization=organization,
            name=name,
            kind=kind,
            online=synced_within(last_sync_at, heartbeat_timeout, now),
            last_sync_age_seconds=_age(now, last_sync_at),
            node_count=counts.get(executor_id, 0),
        )
        executors.append(status)
        by_id[executor_id] = status

    nodes: list[NodeStatus] = []
    # In parts, each fetched by an await: turning 15,000 rows into statuses takes the event
    # loop about a second, which the syncs and polls meanwhile must not wait out whole.
    result = await session.stream(
        select(
            Node.id,
            Node.executor_id,
            Node.name,
            Node.chain,
            Node.network,
            Node.revision,
            Node.deleted_at,
            # The spec's one field the phase needs, not the whole document to decode.
            Node.spec["desiredState"].as_string(),
            Node.observed,
            Node.observed_at,
        )
        .order_by(Node.organization_id, Node.name)
        .execution_options(yield_per=NODES_PER_FETCH)
    )
    async for part in result.partitions():
        for id_, executor_id, name, chain, network, revision, deleted_at, desired, raw, at in part:
            executor = by_id.get(executor_id)
            if executor is None:  # committed between the reads on a database without snapshots
                continue
            observed = stored_observation(raw)
            nodes.append(
                NodeStatus(
                    id=id_,
                    organization=executor.organization,
                    name=name,
                    executor=executor.name,
                    chain=chain,
                    network=network,
                    # As `phase_of` derives it for the API.
                    phase=derive_node_phase(
                        desired_state=desired or DesiredState.RUNNING,
                        revision=revision,
                        deleted=deleted_at is not None,
                        observed=observed,
                    ),
                    stale=not executor.online,
                    last_observed_age_seconds=_age(now, at),
                    processes=tuple(observed.processes) if observed else (),
                )
            )
        # A fetch whose rows had already arrived did not wait: let requests in between.
        await asyncio.sleep(0)
    return FleetStatus(executors=executors, nodes=nodes)
