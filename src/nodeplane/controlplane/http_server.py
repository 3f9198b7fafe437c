"""How the control plane is served over HTTP: one uvicorn configuration for `server` and `up`."""

import asyncio
import contextlib
import urllib.parse
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from nodeplane.controlplane.profiling import on_asyncio_loop

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
        self._parse_head()
        cycle = self.cycle
        # The cycle made for this request (none is for an upgrade: an earlier one may be there)
        # writes through the proxy; its task has not run yet.
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = HeadWithBody(self.transport, cycle)

    def _parse_head(self) -> None:
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


class HeadWithBody(asyncio.Transport):
    """A response's transport that sends its head with the first write of its body.

    Uvicorn writes a response's status line and headers when the app starts the response, and
    its body when the app sends it: two sends, two TCP segments, and two wake-ups of the client
    for every answer (under a fleet's load, socket writes took a sixth of the event loop). This
    holds the head of a response with a Content-Length (the body follows in the same task step)
    and sends both in one write. A chunked response (a stream whose first event may be a while
    coming), a HEAD request's (no body is written) and the 100 Continue interim answer (written
    before the response starts) pass at once. A close sends what is held first.

    The cycle is held weakly: it holds this transport, and a strong reference back would make
    every request's cycle (its scope, its messages, its task's frames) garbage that only the
    cyclic collector frees, which the server runs every 10 minutes (gc_policy.py). Each request
    would then be kept for that long: 14-15 KB per held poll at 10,000 polls.
    """

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        super().__init__()
        self._transport = transport
        self._cycle = weakref.ref(cycle)
        self._head: bytes | None = None
        self._head_passed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write `data`, after the head held if there is one; hold the response's head."""
        if self._head is not None:
            data, self._head = self._head + bytes(data), None
        elif not self._head_passed:
            cycle = self._cycle()
            if cycle is not None and cycle.response_started:
                self._head_passed = True
                if cycle.chunked_encoding is False and cycle.scope["method"] != "HEAD":
                    self._head = bytes(data)
                    return
        self._transport.write(data)

    def _release(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        """Send what is held, then close the connection."""
        self._release()
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is held and buffered."""
        self._head = None
        self._transport.abort()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The connection's transport information."""
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        """Bytes the connection's transport has not sent yet, what is held included."""
        held = len(self._head) if self._head is not None else 0
        return self._transport.get_write_buffer_size() + held


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
        # Under a profile, asyncio's (controlplane/profiling.py).
        loop="asyncio" if on_asyncio_loop() else "uvloop",
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
