"""What spec polls keep of an executor between renewals (ChangeNotifier.remember/recall): kept
only when no wake-up came while it was read, forgotten at the executor's next wake-up, and never
recalled while changes may be missed (PostgreSQL's LISTEN down, or shutting down)."""

import asyncio

from nodeplane.controlplane.store.notify import ChangeNotifier


def test_a_look_is_kept_until_its_key_is_woken() -> None:
    asyncio.run(_kept_until_woken())


async def _kept_until_woken() -> None:
    notifier = ChangeNotifier(None)  # in-process, as on SQLite
    waiter = notifier.subscribe("e1")
    notifier.remember("e1", waiter, "look of e1")
    assert notifier.recall("e1") == "look of e1"
    assert notifier.recall("e2") is None
    notifier.publish_local("e2")
    assert notifier.recall("e1") == "look of e1"
    notifier.publish_local("e1")
    assert notifier.recall("e1") is None
    assert waiter.done()


def test_a_look_read_while_a_wake_up_came_is_not_kept() -> None:
    asyncio.run(_read_while_woken())


async def _read_while_woken() -> None:
    notifier = ChangeNotifier(None)
    waiter = notifier.subscribe("e1")
    # The read began after subscribing; the change came before it was kept: it may predate it.
    notifier.publish_local("e1")
    notifier.remember("e1", waiter, "look that may predate the change")
    assert notifier.recall("e1") is None


def test_nothing_is_recalled_while_changes_may_be_missed() -> None:
    asyncio.run(_while_missed())


async def _while_missed() -> None:
    listening = ChangeNotifier("host=127.0.0.1")  # never started: LISTEN is down
    waiter = listening.subscribe("e1")
    listening.remember("e1", waiter, "look")
    assert listening.recall("e1") is None
    listening.connected = True
    listening.remember("e1", waiter, "look")
    assert listening.recall("e1") == "look"
    listening.connected = False
    assert listening.recall("e1") is None

    closing = ChangeNotifier(None)
    kept = closing.subscribe("e1")
    closing.remember("e1", kept, "look")
    closing.close_all()
    assert closing.recall("e1") is None
