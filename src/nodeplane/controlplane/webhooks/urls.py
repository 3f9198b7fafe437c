"""Which URLs a webhook may be sent to, checked when an endpoint is saved and again, on the
addresses its host resolves to, before every attempt.

- `https://` to any host whose addresses are allowed (below).
- `http://` only to a host that is loopback by name: `localhost`, or a literal address in
  127.0.0.0/8 or ::1. A DNS name that happens to resolve to 127.0.0.1 is *not* loopback by
  name and is refused for plain HTTP: what it resolves to can change after it is saved, and
  plain HTTP to anything else crosses a network in clear. `localhost` must also resolve only to
  loopback addresses when an attempt is made.
- Never an address no receiver should be on: link-local (169.254.0.0/16, where cloud metadata
  services answer, and fe80::/10), unspecified (0.0.0.0, ::), multicast, or reserved ranges.
  Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed over HTTPS: the control
  plane is self-hosted, and an internal relay is a normal receiver.
- No user name or password in the URL (the signature authenticates the sender; credentials
  in a URL end up in logs), no fragment, at most MAX_URL_CHARS, ASCII only (IDNs as punycode).

Each attempt connects to an address checked (resolve_destination; the next one if it refuses
the connection, as `localhost` may name ::1 first for a receiver on 127.0.0.1), not to whatever
the name resolves to a moment later, so a name cannot be re-pointed between check and send.
"""

import asyncio
import ipaddress
import re
import socket
from concurrent.futures import Executor
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from nodeplane.controlplane.errors import DomainError, ErrorCode

MAX_URL_CHARS = 2048
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookUrlError(DomainError):
    """A webhook URL refused; `code` says whether it is malformed, insecure or off limits."""


def _invalid(message: str) -> WebhookUrlError:
    return WebhookUrlError(ErrorCode.INVALID_INPUT, f"url {message}", field="url")


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_problem(address: IPAddress) -> str | None:
    """Why no webhook may be sent to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_problem(address.ipv4_mapped)
    if address.is_loopback:
        return None  # before `is_reserved`: ::1 lies in the reserved ::/8
    if address.is_unspecified:
        return "is the unspecified address"
    if address.is_link_local:
        return "is link-local (where cloud metadata services answer)"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_reserved:
        return "is in a reserved range"
    return None


def is_loopback_name(host: str) -> bool:
    """True for `localhost` and literal loopback addresses: the hosts plain HTTP may reach."""
    if host == "localhost":
        return True
    address = _literal_address(host)
    return address is not None and address.is_loopback


@dataclass(frozen=True)
class WebhookUrl:
    """A checked webhook URL, its parts as sending needs them."""

    url: str
    scheme: str
    host: str  # lowercase; an IPv6 literal without brackets
    port: int

    @property
    def plain_http(self) -> bool:
        return self.scheme == "http"


def check_webhook_url(raw: str) -> WebhookUrl:
    """`raw` as a webhook URL, or a typed error that says what is wrong with it."""
    url = raw.strip()
    if not url:
        raise _invalid("is required")
    if len(url) > MAX_URL_CHARS:
        raise _invalid(f"must be at most {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise _invalid("must be ASCII without spaces or control characters (IDNs as punycode)")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _invalid(f"is not a valid URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise _invalid("must start with https:// (or http:// to a loopback address)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _invalid("must not carry a user name or password")
    if parts.fragment or url.endswith("#"):
        raise _invalid("must not have a #fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise _invalid("must name a host")
    address = _literal_address(host)
    if address is None:
        name = host.removesuffix(".")
        if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
            raise _invalid("host is not a valid DNS name or IP address")
        if name.split(".")[-1].isdigit():
            raise _invalid("host is not a valid DNS name or IP address")
    elif problem := address_problem(address):
        raise WebhookUrlError(ErrorCode.WEBHOOK_ADDRESS_REFUSED, f"url host {problem}", field="url")
    if scheme == "http" and not is_loopback_name(host):
        raise WebhookUrlError(
            ErrorCode.INSECURE_WEBHOOK_URL,
            "plain http:// is allowed only to loopback (localhost, 127.0.0.0/8, ::1); use https://",
            field="url",
        )
    if port == 0:
        raise _invalid("port must be 1-65535")
    normalized = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
    return WebhookUrl(normalized, scheme, host, port or (443 if scheme == "https" else 80))


class DestinationRefused(Exception):
    """The host resolved to no address a delivery may go to (see the module's rules)."""


async def resolve_destination(
    target: WebhookUrl, resolver: Executor | None = None
) -> list[IPAddress]:
    """The addresses an attempt may connect to, in the resolver's order, after checking every
    address the host resolves to (one refused address refuses the host: a name that also
    points at a metadata service is not a receiver).

    `resolver` runs the blocking lookup (the loop's default executor if None): the dispatcher
    gives it threads of its own, so a resolver that hangs holds none the server needs."""
    literal = _literal_address(target.host)
    if literal is not None:
        found: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().run_in_executor(
                resolver,
                lambda: socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM),
            )
        except (socket.gaierror, UnicodeError) as error:
            raise DestinationRefused(f"cannot resolve {target.host}: {error}") from None
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not found:
        raise DestinationRefused(f"{target.host} resolves to no address")
    for address in found:
        if problem := address_problem(address):
            raise DestinationRefused(f"{target.host} resolves to {address}, which {problem}")
        if target.plain_http and not address.is_loopback:
            raise DestinationRefused(
                f"{target.host} resolves to {address}: plain http:// goes to loopback only"
            )
    return found


def pinned_url(target: WebhookUrl, address: IPAddress) -> str:
    """`target`'s URL with its host replaced by `address` (the Host header and, for TLS, the
    server name still carry the original host)."""
    parts = urlsplit(target.url)
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
