"""The webhook API as the tests call it, and the receiver's verification recipe."""

import hashlib
import hmac
import time
from typing import Any

from tests.support.gql import Client

CREATE = """mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret endpoint { id url enabled eventTypes secretPrefix } } }"""
UPDATE = """mutation($input: UpdateWebhookEndpointInput!) {
  updateWebhookEndpoint(input: $input) { id url enabled eventTypes description } }"""
DELETE = "mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) }"
ROTATE = (
    "mutation($id: UUID!) { rotateWebhookSecret(id: $id) { secret endpoint { secretPrefix } } }"
)
TEST = "mutation($id: UUID!) { testWebhook(id: $id) { id status eventType } }"
REDELIVER = "mutation($id: UUID!) { redeliverWebhook(deliveryId: $id) { id status series } }"
ENDPOINTS = "{ webhookEndpoints { id url description enabled eventTypes secretPrefix } }"
ENDPOINT = "query($id: UUID!) { webhookEndpoint(id: $id) { id url } }"
DELIVERY_FIELDS = """id endpointId eventId eventType status series attemptCount lastStatusCode
  lastError body attempts { series number statusCode responseExcerpt error succeeded durationMs }"""
DELIVERY = f"query($id: UUID!) {{ webhookDelivery(id: $id) {{ {DELIVERY_FIELDS} }} }}"
DELIVERIES = f"""query($e: UUID, $first: Int!, $after: String) {{
  webhookDeliveries(endpointId: $e, first: $first, after: $after) {{
    items {{ {DELIVERY_FIELDS} }} pageInfo {{ endCursor hasNextPage }} }} }}"""


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's recipe from docs/webhooks.md, written out as a receiver would."""
    timestamp = headers["nodeplane-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(
        hmac.compare_digest(f"v1={expected}", candidate.strip())
        for candidate in headers["nodeplane-signature"].split(",")
    )


def create_endpoint(client: Client, url: str, **fields: Any) -> tuple[str, str]:
    """(endpoint id, secret)."""
    data = client(CREATE, {"input": {"url": url, **fields}})["createWebhookEndpoint"]
    return data["endpoint"]["id"], data["secret"]


def wait_delivery(
    client: Client, delivery_id: str, status: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delivery: dict[str, Any] = {}
    while time.monotonic() < deadline:
        delivery = client(DELIVERY, {"id": delivery_id})["webhookDelivery"]
        if delivery["status"] == status:
            return delivery
        time.sleep(0.1)
    raise AssertionError(f"delivery did not become {status}: {delivery}")
