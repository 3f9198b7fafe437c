"""Webhook signatures: HMAC-SHA256 over `timestamp + "." + body` with the endpoint's secret.

Every delivery carries

    Nodeplane-Delivery:  the delivery id (the same on every attempt and redelivery)
    Nodeplane-Event:     the event type, e.g. notification.alert.opened
    Nodeplane-Timestamp: Unix seconds when this attempt was signed
    Nodeplane-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body bytes, with
the secret as UTF-8 bytes, compares in constant time, and refuses a timestamp older than a few
minutes (a replay). `verify_signature` below is that recipe, and docs/webhooks.md shows it.
"""

import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

DELIVERY_HEADER = "Nodeplane-Delivery"
EVENT_HEADER = "Nodeplane-Event"
TIMESTAMP_HEADER = "Nodeplane-Timestamp"
SIGNATURE_HEADER = "Nodeplane-Signature"


def new_secret() -> str:
    """A new signing secret: 256 random bits with a recognizable prefix."""
    return f"{SECRET_PREFIX}{secrets.token_urlsafe(32)}"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Nodeplane-Signature` header value for `body` signed at `timestamp`."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(
    secret: str, *, delivery_id: str, event_type: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers one attempt sends with `body`."""
    return {
        "content-type": "application/json",
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event_type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify_signature(
    secret: str,
    timestamp_header: str,
    signature_header: str,
    body: bytes,
    *,
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """The receiver's check: the signature matches and the timestamp is recent.

    `signature_header` may list several comma-separated `v1=` values; any one matching is
    enough (room for signing with two secrets while one is being replaced)."""
    if not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body)
    return any(
        hmac.compare_digest(expected, candidate.strip())
        for candidate in signature_header.split(",")
    )
