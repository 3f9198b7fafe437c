"""HTTP helpers for the UI's forms and pages, as a browser would use them: the CSRF token of a
rendered form, the session cookie, and requests too long for httpx."""

import http.client
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from nodeplane.controlplane.api.context import SESSION_COOKIE
from tests.support.tls import TLS

CSRF_COOKIE = "nodeplane_csrf"
FOREIGN_ORIGIN = "http://attacker.example"
_TOKEN_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def form_token(html: str) -> str:
    """The CSRF token embedded in a rendered page's form."""
    found = _TOKEN_FIELD.search(html)
    assert found, "the page has no csrf_token field"
    return found.group(1)


def browser_session(base_url: str, session_token: str | None = None) -> httpx.Client:
    """A cookie-keeping client, signed in with `session_token` if given, never following
    redirects (the tests look at them)."""
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30, verify=TLS)
    if session_token is not None:
        client.cookies.set(SESSION_COOKIE, session_token, domain=urlsplit(base_url).hostname)
    return client


def sets_cookie(response: httpx.Response, name: str) -> bool:
    """Whether the response sets (not deletes) cookie `name`."""
    for header in response.headers.get_list("set-cookie"):
        cookie_name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0].strip().strip('"')
        if cookie_name.strip() == name and value:
            return True
    return False


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    text: str


def raw_get(base_url: str, target: str, cookies: dict[str, str] | None = None) -> RawResponse:
    """GET `target` (path and query, sent as given) with http.client, which unlike httpx sends
    request lines of any length."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        headers = {}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def trickled_get(
    base_url: str, target: str, cookies: dict[str, str] | None = None, piece: int = 2048
) -> RawResponse:
    """GET `target` with the request head sent in `piece`-byte writes a little apart, as a slow
    or distant client's bytes arrive: the server sees the head incomplete many times over."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", "Connection: close"]
    if cookies:
        lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(head), piece):
            sock.sendall(head[start : start + piece])
            time.sleep(0.002)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read().decode("utf-8", "replace")
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
