"""Create simulated executors in bulk: keys, executors and nodes, through the service layer.

Thousands of executors with ten nodes each would take minutes one GraphQL request at a time, so
setup calls the same service functions the API calls (create_api_key, sync_executor,
create_node), many per transaction, from this process against the server's database. Every row,
event and revision is the one the API would have written; only the HTTP round trips are skipped.
The load itself always goes through HTTP.
"""

import asyncio
import uuid
from dataclasses import dataclass

from tests.support.fleet import CAPABILITIES, LITECOIN_SPEC

from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.auth.principal import ApiKeyKind, Principal
from nodeplane.controlplane.services.api_keys import create_api_key
from nodeplane.controlplane.services.executors import sync_executor
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.services.nodes import create_node
from nodeplane.controlplane.store.database import Database
from nodeplane.protocol import ExecutorKind, SyncExecutorRequest

# Executors per write transaction: large enough to amortize commits, small enough that the
# server (sharing SQLite's one writer) is never locked out for long.
BATCH = 50


@dataclass(frozen=True)
class SimulatedExecutorSpec:
    """What a worker needs to play one executor: its name, key, instance and nodes."""

    name: str
    secret: str
    instance_id: str
    node_ids: tuple[str, ...]


def executor_name(prefix: str, index: int) -> str:
    """The simulated executor's name (a DNS label, stable across ramp steps)."""
    return f"{prefix}-{index:05d}"


async def _provision(
    database_url: str, owner_token: str, prefix: str, start: int, count: int, nodes: int
) -> list[SimulatedExecutorSpec]:
    db = Database(database_url)
    heartbeat = Heartbeat(timeout=30)
    out: list[SimulatedExecutorSpec] = []
    try:
        owner = await authenticate(db, owner_token)
        assert owner is not None and owner.can_mutate, "the token must be an owner's or admin's"
        assert owner.organization_id is not None
        for batch_start in range(start, start + count, BATCH):
            async with db.write() as uow:
                for index in range(batch_start, min(batch_start + BATCH, start + count)):
                    name = executor_name(prefix, index)
                    key = await create_api_key(
                        uow, owner, name=f"loadgen {name}", kind=ApiKeyKind.EXECUTOR
                    )
                    # The principal authenticate() makes for this key before its first sync.
                    as_key = Principal(
                        kind="executor",
                        organization_id=owner.organization_id,
                        label=f"key:{key.key.name}",
                        api_key_id=key.key.id,
                    )
                    request = SyncExecutorRequest(
                        name=name,
                        kind=ExecutorKind.AGENT,
                        version="0.1.0-loadgen",
                        capabilities=CAPABILITIES,
                    )
                    executor = (await sync_executor(uow, as_key, request, heartbeat)).executor
                    node_ids = []
                    for n in range(nodes):
                        node = await create_node(
                            uow, owner, executor_id=executor.id, name=f"n{n}", spec=LITECOIN_SPEC
                        )
                        node_ids.append(str(node.id))
                    out.append(
                        SimulatedExecutorSpec(
                            name=name,
                            secret=key.secret,
                            instance_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{prefix}")),
                            node_ids=tuple(node_ids),
                        )
                    )
    finally:
        await db.close()
    return out


def provision(
    database_url: str,
    owner_token: str,
    *,
    prefix: str = "lg",
    start: int = 0,
    count: int,
    nodes: int = 10,
) -> list[SimulatedExecutorSpec]:
    """Create executors `start` .. `start + count - 1`, each with its own key and `nodes` nodes.

    `owner_token` is an owner's or admin's session token or personal key: the executors and
    nodes belong to that caller's organization.
    """
    return asyncio.run(_provision(database_url, owner_token, prefix, start, count, nodes))
