"""A reader of a node's live-log stream (`GET /nodes/{id}/logs/stream`) in a thread of its own,
as the CLI reads it: every event with the time it arrived, and `close()` to leave.

A plain socket (the test servers speak plain HTTP on loopback), so that leaving is a real
shutdown of the connection, which the server notices as a browser tab closing.
"""

import contextlib
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass
class Arrived:
    event: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class LogStreamReader:
    """Opens the stream on `start()`; `events` receives each event; `close()` leaves."""

    def __init__(
        self, base_url: str, token: str | None, node_id: str, *, cookie: str | None = None,
        accept: str | None = None, **params: Any,
    ) -> None:  # fmt: skip
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        query = urlencode({k: str(v) for k, v in params.items()})
        self.path = f"/nodes/{node_id}/logs/stream" + (f"?{query}" if query else "")
        self.headers = {"host": f"{self.host}:{self.port}", "connection": "close"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        if cookie:
            self.headers["cookie"] = cookie
        if accept:
            self.headers["accept"] = accept
        self.events: queue.Queue[Arrived] = queue.Queue()
        self.status: int | None = None
        self.refusal: dict[str, Any] | None = None
        self.ended = threading.Event()
        self._opened = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout: float = 15) -> "LogStreamReader":
        self._thread.start()
        assert self._opened.wait(timeout), "the log stream did not answer"
        return self

    def _run(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=90)
            self._sock = sock
            head = f"GET {self.path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in self.headers.items()
            )
            sock.sendall((head + "\r\n").encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            header, _, buffer = buffer.partition(b"\r\n\r\n")
            self.status = int(header.split(b" ", 2)[1])
            chunked = b"transfer-encoding: chunked" in header.lower()
            if self.status != 200:
                while data := sock.recv(65536):
                    buffer += data
                body = _dechunk(buffer) if chunked else buffer
                self.refusal = json.loads(body)["error"]
                return
            self._opened.set()
            self._read_events(sock, buffer, chunked)
        except OSError:
            return  # closed under the reader by close(), or the server went away
        finally:
            self._opened.set()
            self.ended.set()

    def _read_events(self, sock: socket.socket, buffer: bytes, chunked: bool) -> None:
        raw = b""
        text = ""
        while True:
            raw += buffer
            payload, raw = _take_chunks(raw) if chunked else (raw, b"")
            text += payload.decode()
            while "\n\n" in text:
                block, text = text.split("\n\n", 1)
                name, data = "message", None
                for line in block.split("\n"):
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                if data is not None:
                    self.events.put(Arrived(name, data))
                    if name == "end":
                        return
            buffer = sock.recv(65536)
            if not buffer:
                return

    def next(self, timeout: float = 10) -> Arrived:
        return self.events.get(timeout=timeout)

    def lines(self, timeout: float = 10, until: str | None = None) -> list[list[str]]:
        """Lines received until one containing `until` arrives (without it: the first event's)."""
        found: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while True:
            arrived = self.next(max(0.01, deadline - time.monotonic()))
            found += arrived.data.get("lines", [])
            if until is None or any(until in text for _, text in found):
                return found

    def close(self) -> None:
        """Leave: the connection is shut down and the server ends the session."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        self._thread.join(timeout=5)


def _take_chunks(raw: bytes) -> tuple[bytes, bytes]:
    """The payload of the complete chunks at the start of `raw`, and what is left."""
    out = b""
    while True:
        size_line, sep, rest = raw.partition(b"\r\n")
        if not sep:
            return out, raw
        size = int(size_line.split(b";")[0] or b"0", 16)
        if len(rest) < size + 2:
            return out, raw
        out += rest[:size]
        raw = rest[size + 2 :]
        if size == 0:
            return out, raw


def _dechunk(raw: bytes) -> bytes:
    return _take_chunks(raw)[0]
