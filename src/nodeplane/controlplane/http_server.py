"""How the control plane is served over HTTP: one uvicorn configuration for `server` and `up`."""

import asyncio
import contextlib
import os
import urllib.parse
from collections.abc import Callable
from types import FrameType
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nodeplane.controlplane.profiling import PROFILE_ENV

# The largest request head (request line and headers) a client may send, however its bytes are
# split on the wire (h11 bounded only a head still incomplete, so a long URL's answer depended on
# how it arrived; httptools bounds nothing by itself). Set well above any URL the pages accept
# (their filters answer a typed 400 for over-long values) so that the page, not the parser,
# decides.
MAX_REQUEST_HEAD_BYTES = 256 * 1024

# httptools.parse_url keeps offsets in 16 bits: it refuses a longer request target.
_PARSE_URL_MAX = 65535

# How long an idle kept-alive connection stays open. Executors call every few seconds; uvicorn's
# 5 s default closed their connections just as the next call went out, so each heartbeat paid a
# new connection and some met a connection the server was closing. Clients keep theirs for less
# (executor/controlplane_client.py), so it is always the client that closes an idle one.
KEEP_ALIVE_SECONDS = 75


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: about a fifth less CPU per request than h11,
    which is pure Python) with a bound on the request head, answered as a malformed request
    is (400), and request targets longer than httptools parses split here instead."""

    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        target = self.url
        if len(target) <= _PARSE_URL_MAX:
            super().on_headers_complete()
            return
        if not target.startswith(b"/"):
            raise httptools.HttpParserError("request target too long")
        # uvicorn builds the scope and schedules the request here; the task has not run yet, so
        # the path and query parsed from the long target replace the placeholder's in time.
        self.url = b"/"
        super().on_headers_complete()
        self.url = target
        raw_path, _, query = target.partition(b"#")[0].partition(b"?")
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        self.scope["path"] = self.root_path + path
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = query

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            # Raised in a parser callback, it surfaces from feed_data as an HttpParserError:
            # uvicorn answers 400 and closes the connection.
            raise httptools.HttpParserError("request head too large")


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
        http=BoundedHttpToolsProtocol,
        # libuv's loop, not asyncio's selector loop: at 1,000 simulated executors on two
        # workers, 5.4-6.0 ms of server CPU per sync instead of 6.7-7.6, and at 600 the same CPU
        # with p99 85 ms instead of 110 (docs/benchmarks.md). `nodeplane up` runs its own loop.
        # Under cProfile, asyncio's: libuv waits for I/O in C, where the profile cannot tell
        # the wait from the Python frame that yielded last.
        loop="asyncio" if os.environ.get(PROFILE_ENV) else "uvloop",
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
