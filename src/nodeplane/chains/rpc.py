"""Small async JSON-RPC and REST helpers for probes: the only network I/O of the adapters."""

import asyncio
import base64
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

PROBE_TIMEOUT_S = 5.0
# Bounds what one probe answer may hold (getpeerinfo of a node with hundreds of peers is well
# under a megabyte): a confused endpoint cannot make the agent buffer without end.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class RpcUnavailable(Exception):
    """The endpoint did not answer usefully: not listening, auth refused, not JSON."""


class RpcError(Exception):
    """The endpoint answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"RPC error {code}: {message}")


def read_cookie(path: Path) -> tuple[str, str]:
    """The `user:password` pair of a Bitcoin-style `.cookie` file."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RpcUnavailable(f"no RPC cookie yet ({path.name})") from exc
    user, sep, password = text.partition(":")
    if not sep:
        raise RpcUnavailable(f"malformed RPC cookie {path.name}")
    return user, password


async def json_rpc(
    http: httpx.AsyncClient,
    url: str,
    method: str,
    params: list[Any] | None = None,
    *,
    auth: tuple[str, str] | None = None,
) -> Any:
    """Call `method` and return its result; raises RpcError or RpcUnavailable."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    # Without a cookie the client's own auth applies (none for Ethereum clients).
    extra: dict[str, Any] = {"auth": httpx.BasicAuth(*auth)} if auth else {}
    try:
        response = await http.post(url, json=body, timeout=PROBE_TIMEOUT_S, **extra)
    except httpx.HTTPError as exc:
        raise RpcUnavailable(f"{method}: {type(exc).__name__}: {exc}") from exc
    if response.status_code in (401, 403):
        raise RpcUnavailable(f"{method}: RPC refused our credentials ({response.status_code})")
    try:
        # Bitcoin Core answers errors with HTTP 500/503 and a JSON body: read the body first.
        payload = response.json()
    except ValueError as exc:
        raise RpcUnavailable(f"{method}: HTTP {response.status_code}, not JSON") from exc
    if not isinstance(payload, dict):
        raise RpcUnavailable(f"{method}: unexpected answer")
    error = payload.get("error")
    if error:
        code = error.get("code", 0) if isinstance(error, dict) else 0
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        raise RpcError(int(code), str(message))
    if "result" not in payload:
        raise RpcUnavailable(f"{method}: answer without result")
    return payload["result"]


async def get_json(http: httpx.AsyncClient, url: str) -> Any:
    """GET a REST resource and return its JSON; raises RpcUnavailable."""
    try:
        response = await http.get(url, timeout=PROBE_TIMEOUT_S)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RpcUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc


async def json_rpc_batch(
    http: httpx.AsyncClient,
    url: str,
    methods: Sequence[str],
    *,
    auth: tuple[str, str] | None = None,
) -> list[Any]:
    """Call every method (no parameters) in one JSON-RPC batch: one request, one connection.

    Their results in order; raises RpcError for the first method that answered with an error,
    RpcUnavailable when the endpoint did not answer usefully. A loopback `http://` endpoint (a
    probe of the node's own client) is asked over a plain socket: the agent probes every node
    every report, and httpx's machinery cost more CPU than everything else the agent does per
    node. The connection is closed after the answer, as bitcoind-family daemons wait for open
    RPC connections before they exit.
    """
    what = "+".join(methods)
    body = json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": m, "params": []} for i, m in enumerate(methods)]
    ).encode()
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        status, content = await _post_loopback(parts.hostname, parts.port or 80, parts, body, auth)
    else:
        extra: dict[str, Any] = {"auth": httpx.BasicAuth(*auth)} if auth else {}
        headers = {"Content-Type": "application/json"}
        try:
            response = await http.post(
                url, content=body, headers=headers, timeout=PROBE_TIMEOUT_S, **extra
            )
        except httpx.HTTPError as exc:
            raise RpcUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        status, content = response.status_code, response.content
    if status in (401, 403):
        raise RpcUnavailable(f"{what}: RPC refused our credentials ({status})")
    try:
        payload = json.loads(content)
    except ValueError as exc:
        raise RpcUnavailable(f"{what}: HTTP {status}, not JSON") from exc
    if isinstance(payload, dict) and payload.get("error"):
        # The batch as a whole was refused (a daemon that does not take batches, say).
        raise _rpc_error(payload["error"])
    if not isinstance(payload, list):
        raise RpcUnavailable(f"{what}: unexpected answer")
    answers = {a.get("id"): a for a in payload if isinstance(a, dict)}
    results = []
    for i, method in enumerate(methods):
        answer = answers.get(i)
        if answer is None:
            raise RpcUnavailable(f"{method}: no answer in the batch")
        if answer.get("error"):
            raise _rpc_error(answer["error"])
        if "result" not in answer:
            raise RpcUnavailable(f"{method}: answer without result")
        results.append(answer["result"])
    return results


def _rpc_error(error: object) -> RpcError:
    code = error.get("code", 0) if isinstance(error, dict) else 0
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    return RpcError(int(code), str(message))


async def _post_loopback(
    host: str, port: int, parts: SplitResult, body: bytes, auth: tuple[str, str] | None
) -> tuple[int, bytes]:
    """POST `body` over HTTP/1.1 on a fresh connection; (status, body). RpcUnavailable if the
    endpoint does not answer with a well-formed response in time."""
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        head.append(f"Authorization: Basic {token}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    writer = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status_line, _, header_block = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
            version, _, rest = status_line.decode("latin-1").partition(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(f"not an HTTP response: {status_line[:40]!r}")
            status = int(rest.split(" ", 1)[0])
            headers = {}
            for line in header_block.decode("latin-1").split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                content = await _read_chunked(reader)
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if length > MAX_ANSWER_BYTES:
                    raise ValueError(f"answer of {length} bytes")
                content = await reader.readexactly(length)
            else:  # the answer ends where the connection does
                content = b""
                while chunk := await reader.read(65536):
                    content += chunk
                    if len(content) > MAX_ANSWER_BYTES:
                        raise ValueError("answer too long")
            return status, content
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        # asyncio.LimitOverrunError (a header block over 64 KiB) is an Exception of its own.
        raise RpcUnavailable(f"POST {parts.netloc}: {type(exc).__name__}: {exc}") from exc
    except asyncio.LimitOverrunError as exc:
        raise RpcUnavailable(f"POST {parts.netloc}: header too long") from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    content = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            return content
        if len(content) + size > MAX_ANSWER_BYTES:
            raise ValueError("answer too long")
        content += (await reader.readexactly(size + 2))[:-2]
