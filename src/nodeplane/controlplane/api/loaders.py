"""Per-request batch loaders: one query for the node counts of all the executors a page asks for.

Without them a list of 200 nodes that selects `executor { nodeCount }` opens 200 database
sessions at once and exhausts the connection pool; with them it runs one query. (A node's
executor is read with the nodes, api/views.py.)
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from strawberry.dataloader import DataLoader

from nodeplane.controlplane.services import executors as executor_service

if TYPE_CHECKING:
    from nodeplane.controlplane.api.context import Context


class Loaders:
    """The batch loaders of one request; they read the caller from the context at load time."""

    def __init__(self, context: "Context") -> None:
        self._context = context
        self.node_count: DataLoader[UUID, int] = DataLoader(self._node_counts)

    async def _node_counts(self, ids: list[UUID]) -> Sequence[int]:
        async with self._context.db.read() as session:
            counts = await executor_service.count_nodes_by_executor(session, ids)
        return [counts.get(i, 0) for i in ids]
