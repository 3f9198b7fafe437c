"""Small async JSON-RPC and REST helpers for probes: the only network I/O of the adapters."""

from pathlib import Path
from typing import Any

import httpx

PROBE_TIMEOUT_S = 5.0


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
