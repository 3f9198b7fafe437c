"""A real HTTP receiver of webhooks on loopback, for tests: a threaded http.server that records
every request and answers as the test scripts it (status codes in turn, or never)."""

import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """What the receiver got, and how it answers: `statuses` in turn (the last repeats), or
    not at all while `hang` is set (the connection is held open until the receiver stops)."""

    url: str
    statuses: list[int] = field(default_factory=lambda: [200])
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def answer(self) -> int:
        with self.lock:
            index = min(len(self.received) - 1, len(self.statuses) - 1)
            return self.statuses[max(0, index)]

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests, once they have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.requests())} of {count} webhook requests arrived")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.received.append(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
            if receiver.hang:
                receiver.released.wait(120)
                return
            status = receiver.answer()
            reply = f'{{"ok": {str(200 <= status < 300).lower()}, "status": {status}}}'.encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass(frozen=True)
class ReceiverCertificates:
    """A throwaway CA and a server certificate it signed for the name `localhost` only."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path) -> ReceiverCertificates:
    """Create a CA and a `localhost` certificate with the openssl command line."""
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=nodeplane webhook test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    extensions = directory / "leaf.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(extensions),
    )
    return ReceiverCertificates(ca, cert, key)


@contextmanager
def webhook_receiver(
    statuses: list[int] | None = None,
    hang: bool = False,
    tls: ReceiverCertificates | None = None,
) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 at a free port, path /hook, stopped afterwards; with `tls`, it
    speaks HTTPS with the certificate for `localhost` (its URL names localhost then)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver("")))
    server.daemon_threads = True
    port = server.server_address[1]
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    url = f"https://localhost:{port}/hook" if tls else f"http://127.0.0.1:{port}/hook"
    receiver = Receiver(url, statuses or [200], hang)
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
