"""The work queue: dedupe, per-key serialization (dirty keys), delays, backoff and shutdown."""

import asyncio

import pytest

from nodeplane.executor.runtime.workqueue import ExponentialBackoff, QueueShutDown, WorkQueue

pytestmark = pytest.mark.anyio

TICK = 0.01  # long enough for a timer of this size to fire, short enough to not be noticed


async def test_add_dedupes_and_keeps_order() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_a_key_being_processed_is_not_handed_out_again_until_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    assert queue.processing("a")

    queue.add("a")  # re-added while processed: dirty, not queued
    queue.add("a")
    assert len(queue) == 0 and queue.waiting("a")
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not second.done(), "a key must never be processed twice at once"

    queue.done("a")  # processed again after, once
    assert await asyncio.wait_for(second, 1) == "a"
    queue.done("a")
    assert not queue.processing("a") and not queue.waiting("a") and len(queue) == 0


async def test_done_without_readd_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    await queue.get()
    queue.done("a")
    assert len(queue) == 0 and not queue.waiting("a")


async def test_other_keys_are_handed_out_while_one_is_processed() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("slow")
    queue.add("fast")
    assert await queue.get() == "slow"
    queue.add("slow")
    assert await queue.get() == "fast"  # not held back by the busy key


async def test_waiting_workers_are_woken_one_per_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    workers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.add("a")
    queue.add("b")
    await asyncio.sleep(0)
    got = sorted(w.result() for w in workers if w.done())
    assert got == ["a", "b"]
    idle = [w for w in workers if not w.done()]
    assert len(idle) == 1
    idle[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle[0]
    queue.add("c")  # the cancelled waiter does not swallow the wake-up
    assert await asyncio.wait_for(queue.get(), 1) == "c"


async def test_add_after_holds_the_key_back_and_the_earliest_time_wins() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 60)
    queue.add_after("a", TICK)  # earlier: replaces the pending one
    queue.add_after("a", 30)  # later: ignored
    assert len(queue) == 0 and queue.waiting("a")
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.done("a")
    await asyncio.sleep(3 * TICK)
    assert len(queue) == 0, "the replaced timers must not fire"


async def test_add_after_zero_is_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0)
    assert len(queue) == 1


def test_backoff_doubles_to_the_cap_and_forget_resets() -> None:
    backoff: ExponentialBackoff[str] = ExponentialBackoff(base=0.5, cap=4.0)
    assert [backoff.when("a") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.when("b") == 0.5, "backoff is per key"
    assert backoff.failures("a") == 6
    backoff.forget("a")
    assert backoff.failures("a") == 0 and backoff.when("a") == 0.5


def test_backoff_never_overflows() -> None:
    backoff: ExponentialBackoff[str] = ExponentialBackoff(base=0.5, cap=60.0)
    for _ in range(5000):
        delay = backoff.when("a")
    assert delay == 60.0


async def test_add_rate_limited_uses_the_keys_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(ExponentialBackoff(base=TICK, cap=1.0))
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 1 and len(queue) == 0
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.done("a")
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 2
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert await asyncio.wait_for(queue.get(), 1) == "a"


async def test_shutdown_drains_then_stops_workers_and_ignores_new_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    idle = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")
    assert await asyncio.wait_for(idle, 1) == "a"
    queue.add("b")
    queue.add_after("c", TICK)
    queue.shutdown()
    assert queue.shutting_down
    queue.add("d")
    assert await queue.get() == "b"  # what was queued is still handed out
    waiting = asyncio.create_task(queue.get())
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(3 * TICK)
    assert len(queue) == 0, "delayed keys are dropped on shutdown"
    queue.add("a")  # dirty marks are not kept either
    queue.done("a")
    assert len(queue) == 0


async def test_a_sleeping_worker_is_released_by_shutdown() -> None:
    queue: WorkQueue[str] = WorkQueue()
    worker = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(worker, 1)
