"""Long loops over nodes that give the event loop a turn now and then.

The server's requests share one event loop, and a loop over many nodes with no await in it
holds every other request until it ends. A moved-sync batch (services/moved_syncs.py) does
tens of microseconds of Python work per node; under load a batch of 500 nodes held the loop
for 40-80 ms in one turn, and every other request waited it out (docs/benchmarks.md, "The
late evening of 2026-12-07"). In steps of about a hundred nodes, the callbacks that became
ready meanwhile run in between.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

# Nodes of work between two turns of the event loop: a few milliseconds at most.
STEP_NODES = 100


async def in_steps(items: Iterable[T], nodes: Callable[[T], int] = lambda _: 1) -> AsyncIterator[T]:
    """`items` one by one, giving the event loop a turn before an item once about
    `STEP_NODES` nodes of work (`nodes` of each item, one by default) came since the last."""
    done = 0
    for item in items:
        if done >= STEP_NODES:
            done = 0
            await asyncio.sleep(0)
        done += nodes(item)
        yield item
