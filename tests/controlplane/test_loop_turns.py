"""Loops over many nodes give the event loop a turn now and then (services/loop_turns.py).

Under the load of 2,000 executors a moved-sync batch of 500 nodes decided, and wrote the values
of, every node in one turn of the event loop: 40-80 ms in which no other request ran
(docs/benchmarks.md, "The late evening of 2026-12-07"). Each test counts the turns another
task gets while the loop runs.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from nodeplane.controlplane.services.loop_turns import STEP_NODES, in_steps
from nodeplane.controlplane.services.moved_syncs import _Claimed, _decide_all, _Sync, _Taken
from nodeplane.controlplane.services.node_facts import NodeFacts
from nodeplane.controlplane.store.models import Executor
from nodeplane.protocol import (
    ExecutorKind,
    NodeObservation,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    SyncExecutorRequest,
)


async def _turns_beside(work: Callable[[], Awaitable[object]]) -> int:
    """How many turns a task that only counts them gets while `work` runs."""
    turns = 0
    stop = False

    async def count() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)  # the counter is running
    before = turns
    await work()
    stop = True
    during = turns - before
    await counter
    return during


def test_a_long_loop_gives_a_turn_every_step_of_nodes_and_keeps_every_item_in_order() -> None:
    async def main() -> None:
        seen: list[int] = []

        async def walk(items: range, nodes: Callable[[int], int] = lambda _: 1) -> None:
            async for i in in_steps(items, nodes):
                seen.append(i)

        assert await _turns_beside(lambda: walk(range(10 * STEP_NODES))) == 9
        assert seen == list(range(10 * STEP_NODES))
        seen.clear()
        # Weighted by each item's nodes: ten nodes an item, a turn every STEP_NODES / 10 items.
        assert await _turns_beside(lambda: walk(range(STEP_NODES), lambda _: 10)) == 9
        assert seen == list(range(STEP_NODES))
        # Fewer nodes than a step: no turn given, none taken.
        assert await _turns_beside(lambda: walk(range(STEP_NODES))) == 0

    asyncio.run(main())


def _process(height: int) -> ObservedProcess:
    return ObservedProcess(role="node", status=ProcessStatus.RUNNING, pid=7, height=height, peers=8)


def test_a_batch_of_500_moved_nodes_is_decided_in_steps_and_decided_exactly() -> None:
    """50 executors' syncs of 10 nodes each, every node's height moved: all taken, each with its
    own ten nodes' new values, with the loop given turns in between."""

    async def main() -> None:
        batch: list[_Sync] = []
        claimed: dict[uuid.UUID, _Claimed] = {}
        facts: dict[uuid.UUID, NodeFacts] = {}
        organization = uuid.uuid4()
        for e in range(50):
            executor_id = uuid.uuid4()
            nodes = [uuid.uuid4() for _ in range(10)]
            stored = ObservedNodeState(revision=2, processes=[_process(100)]).to_wire()
            for node_id in nodes:
                facts[node_id] = NodeFacts(
                    node_id, organization, executor_id, f"n{e}", "litecoin", "regtest",
                    2, None, "running", stored, None, None,
                )  # fmt: skip
            moved = ObservedNodeState(revision=2, processes=[_process(101)])
            request = SyncExecutorRequest(
                name=f"host-{e}",
                kind=ExecutorKind.AGENT,
                version="1.0.0",
                instance_id=uuid.uuid4(),
                nodes=[NodeObservation(node_id=n, observed=moved) for n in nodes],
            )
            answer = asyncio.get_running_loop().create_future()
            sync = _Sync(executor_id, request, {}, {}, e, 0, answer)
            batch.append(sync)
            claimed[executor_id] = _Claimed(sync, Executor(id=executor_id, name=f"host-{e}"))
        taken: list[_Taken] = []

        async def decide() -> None:
            taken.extend(await _decide_all(batch, claimed, facts))

        assert await _turns_beside(decide) == 500 // STEP_NODES - 1
        assert [t.sync for t in taken] == batch
        for t in taken:
            assert [fact.id for fact, _, _ in t.moved] == [o.node_id for o in t.sync.request.nodes]
            assert all(wire["processes"][0]["height"] == 101 for _, _, wire in t.moved)

    asyncio.run(main())
