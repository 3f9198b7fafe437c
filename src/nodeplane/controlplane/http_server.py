"""How the control plane is served over HTTP: one uvicorn configuration for `server` and `up`."""

import asyncio
import contextlib
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

# The largest request head (request line and headers) a client may send. h11 refuses a head that
# is still incomplete past this size, but one that arrives in a single read is accepted whatever
# its length, so below this bound the answer to a long URL would depend on how the bytes happened
# to be split on the wire. Set well above any URL the pages accept (their filters answer a typed
# 400 for over-long values) so that the page, not the parser, decides.
MAX_REQUEST_HEAD_BYTES = 256 * 1024

# How long an idle kept-alive connection stays open. Executors call every few seconds; uvicorn's
# 5 s default closed their connections just as the next call went out, so each heartbeat paid a
# new connection and some met a connection the server was closing. Clients keep theirs for less
# (executor/controlplane_client.py), so it is always the client that closes an idle one.
KEEP_ALIVE_SECONDS = 75


def uvicorn_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration the control plane runs under; `options` add to it."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        **options,
    )


class GracefulServer(uvicorn.Server):
    """Uvicorn server that lets held long-polls answer as soon as a shutdown is asked for."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in a signal handler: hand the wake-up to the event loop rather than run it here.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon_threadsafe(self._on_exit)
        super().handle_exit(sig, frame)
