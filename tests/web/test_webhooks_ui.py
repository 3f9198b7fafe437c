"""The webhooks pages in Chromium against a real control plane and a real receiver on loopback:
an owner adds an endpoint (the secret shown once signs what arrives), presses Test, watches
each attempt on the deliveries page (a 500, then the 200) and redelivers; a URL the API refuses
shows its error at the field; a member sees both pages without the buttons that change them."""

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.fleet import Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token
from tests.support.webhook_receiver import webhook_receiver
from tests.web.conftest import screenshot
from tests.web.helpers import sign_in_as

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def webhook_web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("webhooks-web")
    server = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}",
        workdir=workdir,
        extra_env={
            "NODEPLANE_WEBHOOK_BACKOFF_BASE": "0.5",
            "NODEPLANE_WEBHOOK_POLL_INTERVAL": "0.2",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def web_org(webhook_web_server: ServerProcess) -> Org:
    url = webhook_web_server.url
    return make_org(url, Client(url, admin_token(url)))


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    timestamp = headers["nodeplane-timestamp"]
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(f"v1={digest.hexdigest()}", headers["nodeplane-signature"])


def test_add_an_endpoint_test_it_and_redeliver_from_the_deliveries_page(
    page: Page, webhook_web_server: ServerProcess, web_org: Org
) -> None:
    base = webhook_web_server.url
    sign_in_as(page, base, web_org.owner)
    page.goto(f"{base}/nodes")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()

    # Plain HTTP to a host that is not loopback is refused, at the field.
    page.get_by_label("URL").fill("http://hooks.example.com/nodeplane")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("[data-error-for=url]")).to_contain_text("plain http:// is allowed only")

    with webhook_receiver(statuses=[500, 200]) as receiver:
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("Description").fill("<b>on-call</b> relay")
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("#webhook-secret-box")).to_be_visible()
        secret = page.locator("#webhook-secret").input_value()
        assert secret.startswith("whsec_")
        row = page.locator("#webhooks-table tr[data-webhook-id]")
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(1)).to_contain_text("<b>on-call</b> relay")  # text, not HTML
        expect(row).to_contain_text(secret[:12])
        screenshot(page, "webhooks-01-endpoint-added")

        row.get_by_role("button", name="Test").click()
        expect(page.locator("#toast")).to_contain_text("Test delivery queued")
        first, second = receiver.wait_for(2)
        assert signed_by(secret, first.headers, first.body)
        assert signed_by(secret, second.headers, second.body)
        delivery_id = json.loads(first.body)["id"]
        assert second.headers["nodeplane-delivery"] == delivery_id

        row.get_by_role("link", name="Deliveries").click()
        delivery = page.locator(
            f'#deliveries-table tbody.delivery[data-delivery-id="{delivery_id}"]'
        )
        expect(delivery).to_have_attribute("data-status", "succeeded")
        attempts = delivery.locator("tr[data-attempt]")
        expect(attempts).to_have_count(2)
        expect(attempts.nth(0).locator("[data-attempt-status]")).to_have_text("500")
        expect(attempts.nth(0).locator("[data-attempt-error]")).to_have_text(
            "the receiver answered 500"
        )
        expect(attempts.nth(1).locator("[data-attempt-status]")).to_have_text("200")
        expect(attempts.nth(1).locator("[data-attempt-response]")).to_contain_text('"ok": true')
        screenshot(page, "webhooks-02-deliveries")

        delivery.get_by_role("button", name="Redeliver").click()
        expect(delivery.locator('tr[data-attempt="2.1"]')).to_have_count(1)
        expect(delivery.locator('tr[data-attempt="2.1"] [data-attempt-status]')).to_have_text("200")
        expect(delivery).to_have_attribute("data-status", "succeeded")
        (third,) = receiver.requests()[2:]
        assert third.headers["nodeplane-delivery"] == delivery_id
        assert signed_by(secret, third.headers, third.body)
        screenshot(page, "webhooks-03-redelivered")


def test_a_member_reads_both_pages_without_the_buttons_that_change_them(
    page: Page, webhook_web_server: ServerProcess, web_org: Org
) -> None:
    base = webhook_web_server.url
    endpoint = web_org.owner(
        'mutation { createWebhookEndpoint(input: {url: "http://127.0.0.1:9/none"}) '
        "{ endpoint { id } } }"
    )["createWebhookEndpoint"]["endpoint"]["id"]
    web_org.owner("mutation($id: UUID!) { testWebhook(id: $id) { id } }", {"id": endpoint})
    member = web_org.add_member("MEMBER")
    sign_in_as(page, base, member)
    page.goto(f"{base}/webhooks")
    row = page.locator(f'#webhooks-table tr[data-webhook-id="{endpoint}"]')
    expect(row).to_contain_text("http://127.0.0.1:9/none")
    expect(page.locator("#webhook-form")).to_have_count(0)
    expect(row.get_by_role("button")).to_have_count(0)
    row.get_by_role("link", name="Deliveries").click()
    delivery = page.locator("#deliveries-table tbody.delivery")
    expect(delivery).to_have_count(1)
    # Port 9 refuses the connection: the attempt shows the error, and no Redeliver for a member.
    expect(delivery.locator("[data-attempt-error]").first).to_contain_text("ConnectError")
    expect(page.get_by_role("button", name="Redeliver")).to_have_count(0)
