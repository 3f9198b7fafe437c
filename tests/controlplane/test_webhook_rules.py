"""Pure rules of webhooks: which URLs and addresses are allowed, the signature recipe, the
retry schedule, and the address an attempt connects to."""

import asyncio
import hashlib
import hmac
import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest

from nodeplane.controlplane.errors import ErrorCode
from nodeplane.controlplane.webhooks.retry import RetryPolicy
from nodeplane.controlplane.webhooks.signing import (
    new_secret,
    signature,
    signed_headers,
    verify_signature,
)
from nodeplane.controlplane.webhooks.urls import (
    DestinationRefused,
    WebhookUrl,
    WebhookUrlError,
    address_problem,
    check_webhook_url,
    is_loopback_name,
    pinned_url,
    resolve_destination,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("https://hooks.example.com", "https://hooks.example.com/"),
        ("  HTTPS://Hooks.Example.com/a?b=c  ", "https://Hooks.Example.com/a?b=c"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
        ("http://127.3.4.5/x", "http://127.3.4.5/x"),
        ("http://localhost/x", "http://localhost/x"),
        ("http://[::1]:9000/x", "http://[::1]:9000/x"),
        ("https://10.1.2.3/internal-relay", "https://10.1.2.3/internal-relay"),
        ("https://xn--bcher-kva.example/", "https://xn--bcher-kva.example/"),
    ],
)
def test_allowed_urls(raw: str, normalized: str) -> None:
    assert check_webhook_url(raw).url == normalized


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("http://example.com/", ErrorCode.INSECURE_WEBHOOK_URL),
        ("http://localhost.example.com/", ErrorCode.INSECURE_WEBHOOK_URL),
        ("http://ip6-localhost/", ErrorCode.INSECURE_WEBHOOK_URL),  # a name, not loopback by name
        ("http://172.16.0.1/", ErrorCode.INSECURE_WEBHOOK_URL),
        ("https://169.254.169.254/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("https://[::ffff:169.254.169.254]/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("https://[fe80::1]/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("https://0.0.0.0/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("https://[::]/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("https://224.0.0.1/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("https://240.0.0.1/", ErrorCode.WEBHOOK_ADDRESS_REFUSED),
        ("", ErrorCode.INVALID_INPUT),
        ("hooks.example.com/x", ErrorCode.INVALID_INPUT),
        ("javascript:alert(1)", ErrorCode.INVALID_INPUT),
        ("file:///etc/passwd", ErrorCode.INVALID_INPUT),
        ("https://user@example.com/", ErrorCode.INVALID_INPUT),
        ("https://user:pw@example.com/", ErrorCode.INVALID_INPUT),
        ("https://example.com/#x", ErrorCode.INVALID_INPUT),
        ("https://exa mple.com/", ErrorCode.INVALID_INPUT),
        ("https://example.com/\x00", ErrorCode.INVALID_INPUT),
        ("https://bücher.example/", ErrorCode.INVALID_INPUT),
        ("https://-bad-.example/", ErrorCode.INVALID_INPUT),
        ("https://example..com/", ErrorCode.INVALID_INPUT),
        ("https://1.2.3/", ErrorCode.INVALID_INPUT),
        ("https://example.com:0/", ErrorCode.INVALID_INPUT),
        ("https://example.com:65536/", ErrorCode.INVALID_INPUT),
        ("https://example.com:http/", ErrorCode.INVALID_INPUT),
        ("https://[::1/", ErrorCode.INVALID_INPUT),
        ("https://example.com/" + "a" * 2100, ErrorCode.INVALID_INPUT),
    ],
)
def test_refused_urls(raw: str, code: ErrorCode) -> None:
    with pytest.raises(WebhookUrlError) as refused:
        check_webhook_url(raw)
    assert refused.value.code is code and refused.value.field == "url"


def test_loopback_by_name() -> None:
    assert is_loopback_name("localhost") and is_loopback_name("127.0.0.1")
    assert is_loopback_name("::1") and is_loopback_name("127.255.0.9")
    assert not is_loopback_name("localhost.example.com")
    assert not is_loopback_name("ip6-localhost") and not is_loopback_name("10.0.0.1")


def test_address_rules() -> None:
    allowed = ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1"]
    for address in allowed:
        assert address_problem(ipaddress.ip_address(address)) is None, address
    for address in ["169.254.1.1", "fe80::2", "0.0.0.0", "::", "ff02::1", "240.1.1.1"]:
        assert address_problem(ipaddress.ip_address(address)) is not None, address


def test_resolve_time_checks_refuse_what_the_name_check_cannot_see() -> None:
    async def resolve(target: WebhookUrl) -> list[str]:
        return [str(a) for a in await resolve_destination(target)]

    # `localhost` goes to loopback addresses only.
    assert set(asyncio.run(resolve(check_webhook_url("http://localhost:9/")))) <= {
        "127.0.0.1",
        "::1",
    }
    # A stored row that skipped the API's check is checked again before any attempt.
    forged = WebhookUrl("http://10.0.0.1/", "http", "10.0.0.1", 80)
    with pytest.raises(DestinationRefused, match="loopback only"):
        asyncio.run(resolve(forged))
    metadata = WebhookUrl("https://169.254.169.254/", "https", "169.254.169.254", 443)
    with pytest.raises(DestinationRefused, match="link-local"):
        asyncio.run(resolve(metadata))


def test_an_attempt_connects_to_the_checked_address_under_the_original_host() -> None:
    target = check_webhook_url("https://hooks.example.com:8443/a?b=1")
    assert pinned_url(target, ipaddress.ip_address("10.0.0.5")) == "https://10.0.0.5:8443/a?b=1"
    plain = check_webhook_url("http://localhost/x")
    assert pinned_url(plain, ipaddress.ip_address("::1")) == "http://[::1]/x"


def test_signature_follows_the_documented_recipe() -> None:
    secret = "whsec_test"
    body = b'{"id":"d1","type":"webhook.test"}'
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(secret, 1_700_000_000, body) == f"v1={expected}"
    headers = signed_headers(
        secret, delivery_id="d1", event_type="webhook.test", timestamp=1_700_000_000, body=body
    )
    assert headers["Nodeplane-Signature"] == f"v1={expected}"
    assert headers["Nodeplane-Timestamp"] == "1700000000"
    assert headers["Nodeplane-Delivery"] == "d1"
    ok = verify_signature(secret, "1700000000", f"v1={expected}", body, now=1_700_000_100)
    assert ok
    assert verify_signature(secret, "1700000000", f"v1=00, v1={expected}", body, now=1_700_000_000)
    assert not verify_signature(secret, "1700000000", f"v1={expected}", body + b"x", now=1.7e9)
    assert not verify_signature("other", "1700000000", f"v1={expected}", body, now=1.7e9)
    # A replay past the tolerance is refused even with a valid signature.
    assert not verify_signature(secret, "1700000000", f"v1={expected}", body, now=1.7e9 + 301)
    assert not verify_signature(secret, "-1", f"v1={expected}", body, now=1.7e9)


def test_secrets_are_random_and_long() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and first.startswith("whsec_") and len(first) >= 6 + 43


def test_backoff_doubles_with_jitter_up_to_the_cap_and_stops_after_the_window() -> None:
    policy = RetryPolicy(base_seconds=10, max_delay_seconds=600, window_seconds=3600)
    rng = random.Random(7)
    for failures, full in [(1, 10), (2, 20), (3, 40), (6, 320), (7, 600), (40, 600)]:
        delays = [policy.delay(failures, rng) for _ in range(200)]
        assert all(full * 0.5 <= d < full for d in delays), failures
        assert max(delays) - min(delays) > full * 0.3  # jittered, not fixed
    start = datetime(2027, 1, 1, tzinfo=UTC)
    when = policy.next_attempt(1, start, start, rng)
    assert when is not None and start + timedelta(seconds=5) <= when < start + timedelta(seconds=10)
    late = start + timedelta(seconds=3590)
    assert policy.next_attempt(8, start, late, rng) is None
    # With the defaults, a receiver that never recovers is tried about ten times in the hour.
    now, failures = start, 0
    while (next_at := RetryPolicy().next_attempt(failures + 1, start, now, rng)) is not None:
        now, failures = next_at, failures + 1
    assert 7 <= failures + 1 <= 13 and now - start <= timedelta(hours=1)
