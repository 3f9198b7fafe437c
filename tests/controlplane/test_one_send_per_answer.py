"""An answer with a Content-Length leaves the server in one write (http_server.HeadWithBody).

Uvicorn wrote a response's head and its body apart: two TCP segments and two wake-ups of the
client per answer, and under a fleet's load socket writes took a sixth of the event loop
(issue 8). The kernel counts the data segments a connection received (TCP_INFO), so the client
here counts what arrived per answer on a kept connection. The answers that must not wait for a
body pass at once: a HEAD request's head, the 100 Continue that lets a client send its body.
"""

import asyncio
import gc
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from nodeplane.controlplane.http_server import uvicorn_config
from tests.support.server import ServerProcess

# struct tcp_info (linux/tcp.h): tcpi_data_segs_in, a __u32 after the fields before it.
_DATA_SEGS_IN_OFFSET = 152


def _data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    value: int = struct.unpack_from("I", info, _DATA_SEGS_IN_OFFSET)[0]
    return value


@contextmanager
def _connection(server: ServerProcess) -> Iterator[socket.socket]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        yield sock


def _read_answer(sock: socket.socket, head_only: bool = False) -> tuple[bytes, bytes]:
    """One HTTP answer: its head, and its body as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if head_only:
        return head, body
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def test_each_answer_arrives_as_one_segment(server: ServerProcess) -> None:
    with _connection(server) as sock:
        before = _data_segments_in(sock)
        for _ in range(20):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            head, body = _read_answer(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert body.startswith(b"{"), body
        assert _data_segments_in(sock) - before == 20


def test_a_head_request_gets_its_head_without_waiting(server: ServerProcess) -> None:
    with _connection(server) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        head, rest = _read_answer(sock, head_only=True)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert rest == b""
        # The connection serves the next request as before.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        head, body = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and body.startswith(b"{")


def test_100_continue_is_sent_before_the_body_arrives(server: ServerProcess) -> None:
    body = b'{"query": "{ __typename }"}'
    with _connection(server) as sock:
        sock.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
            b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        interim, rest = _read_answer(sock, head_only=True)
        assert (interim, rest) == (b"HTTP/1.1 100 Continue", b"")
        sock.sendall(body)
        head, answer = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"__typename" in answer


def test_an_answered_request_is_freed_without_the_cyclic_collector() -> None:
    """The server runs the cyclic collector every 10 minutes (gc_policy.py), so a request whose
    objects form a reference cycle lives that long. The transport that holds a response's head
    made one with the request's cycle: 14-15 KB more per held poll at 10,000 polls (issue 8's
    P4 row, docs/benchmarks.md). Here the real server answers requests on a kept connection
    with the collector off, and only the cycle of the last may still be alive."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, lifespan="off"))
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        # The socket listens already: the connection waits in its backlog until serve() starts.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(50):
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert await reader.readexactly(2) == b"ok"
        alive = sum(isinstance(o, RequestResponseCycle) for o in gc.get_objects())
        writer.close()
        server.should_exit = True
        await serving
        return alive

    gc.collect()
    gc.disable()
    try:
        alive = asyncio.run(scenario())
    finally:
        gc.enable()
    assert alive <= 1
