"""A write on PostgreSQL wakes the held polls of its own process as it commits, without waiting
for its NOTIFY to come back through the LISTEN connection; the echo then wakes none of them
again, while another process's notice still does (store/database.py `Database.write`)."""

import asyncio
import uuid

from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.migrate import migrate


async def _woken(waiter: "asyncio.Future[None]", within: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(waiter), within)
    except TimeoutError:
        return False
    return True


def test_a_commit_wakes_this_process_s_polls_at_once_and_its_echo_does_not_again(
    pg_url: str,
) -> None:
    migrate(pg_url)

    async def scenario() -> None:
        here, elsewhere = Database(pg_url), Database(pg_url)
        executor = str(uuid.uuid4())
        try:
            # No LISTEN yet: only the commit itself can wake the poll.
            held = here.notifier.subscribe(executor)
            async with here.write() as uow:
                uow.wake(uuid.UUID(executor))
            assert held.done()

            await here.start()
            await elsewhere.start()
            async with here.write() as uow:
                uow.wake(uuid.UUID(executor))
            # A poll held again at once, having read what was committed.
            renewed = here.notifier.subscribe(executor)
            # The echo is back once nothing is expected any more (10 s: a busy machine).
            for _ in range(1000):
                if not here.notifier._echoes:
                    break
                await asyncio.sleep(0.01)
            assert not here.notifier._echoes
            assert not renewed.done()
            # The same notice from another process is news.
            async with elsewhere.write() as uow:
                uow.wake(uuid.UUID(executor))
            assert await _woken(renewed, 5.0)
        finally:
            await here.close()
            await elsewhere.close()

    asyncio.run(scenario())
