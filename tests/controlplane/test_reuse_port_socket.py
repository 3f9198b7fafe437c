"""The socket `nodeplane server --workers N` binds: connections it accepts have Nagle off."""

import asyncio
import socket

from nodeplane.controlplane.worker_processes import reuse_port_socket


async def _accepted_nodelay(sock: socket.socket) -> int:
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    async with server:
        host, port = sock.getsockname()[:2]
        _reader, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(accepted, timeout=5)
        finally:
            writer.close()


def test_connections_accepted_by_a_worker_have_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY on accepted sockets only when the listening socket says TCP;
    # without it, responses sent in two writes waited for the client's delayed ACK (40 ms).
    sock = reuse_port_socket("127.0.0.1", 0)
    assert asyncio.run(_accepted_nodelay(sock)) != 0


def test_two_sockets_share_one_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    second = reuse_port_socket("127.0.0.1", first.getsockname()[1])
    try:
        assert first.getsockname() == second.getsockname()
    finally:
        first.close()
        second.close()
