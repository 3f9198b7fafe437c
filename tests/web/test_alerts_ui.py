"""The bell, the incidents page and alert settings in a real browser, against a real control plane
whose incidents are opened and resolved by real syncs."""

from typing import Any

from playwright.sync_api import Browser, Page, expect

from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.fleet import LITECOIN_SPEC, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess
from tests.web.conftest import screenshot
from tests.web.helpers import create_node, fake_executor, short_hex, sign_in_as

GIB = 1 << 30


def observed(status: ProcessStatus = ProcessStatus.RUNNING, **metrics: Any) -> ObservedNodeState:
    return ObservedNodeState(
        revision=1, processes=[ObservedProcess(role="node", status=status, **metrics)]
    )


def test_bell_incidents_page_and_alert_settings(
    page: Page, browser: Browser, e2e_server: ServerProcess, e2e_admin: Client
) -> None:
    base = e2e_server.url
    org = make_org(base, e2e_admin)
    # This test's fake executor stops syncing between calls: keep executor_offline out of the
    # counts (which also shows an organization default taking effect).
    org.owner("mutation { setAlertDefault(rule: EXECUTOR_OFFLINE, enabled: false) { rule } }")
    executor = fake_executor(org, "bell")
    first, second = f"ltc-a-{short_hex()}", f"ltc-b-{short_hex()}"
    a = create_node(org, executor, first, LITECOIN_SPEC)
    b = create_node(org, executor, second, LITECOIN_SPEC)
    executor.sync({a: observed(ProcessStatus.STOPPED), b: observed(height=3)})

    sign_in_as(page, base, org.owner)
    page.goto(f"{base}/nodes")
    bell = page.get_by_role("button", name="Incidents: 1 open")
    expect(bell).to_be_visible()
    expect(page.locator("[data-bell-count]")).to_have_text("1")
    bell.click()
    panel = page.get_by_role("region", name="Open incidents")
    expect(panel).to_be_visible()
    expect(panel.get_by_role("link", name=f"node_down {first}")).to_be_visible()
    screenshot(page, "alerts-01-bell-open")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # A second node goes down while the page stays open: the bell catches up by itself.
    executor.sync({a: observed(ProcessStatus.STOPPED), b: observed(ProcessStatus.ERROR)})
    expect(page.get_by_role("button", name="Incidents: 2 open")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Incidents: 2 open").click()
    expect(panel.get_by_role("link", name=f"node_down {second}")).to_be_visible()

    # The first one recovers; the incidents page filters by state.
    executor.sync({a: observed(height=4), b: observed(ProcessStatus.ERROR)})
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Incidents").click()
    expect(page.get_by_role("heading", name="Incidents")).to_be_visible()
    rows = page.locator("#incidents-table tbody tr[data-incident-id]")
    expect(rows).to_have_count(2)
    expect(page.locator("#open-count")).to_have_text("1 open")
    page.get_by_role("link", name="Resolved", exact=True).click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-state", "resolved")
    expect(rows.first).to_contain_text(first)
    expect(rows.first).to_contain_text("condition cleared")
    page.get_by_role("link", name="Open", exact=True).click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(second)
    expect(rows.first).to_contain_text("open · critical")
    screenshot(page, "alerts-02-incidents-open")

    # A node's own overrides: a bad threshold gets the API's message by its field; a good one
    # opens disk_usage at once.
    executor.sync(
        {
            a: observed(height=4, disk_total_bytes=100 * GIB, disk_available_bytes=40 * GIB),
            b: observed(ProcessStatus.ERROR),
        }
    )
    rows.first.get_by_role("link", name=second).click()
    page.goto(f"{base}/nodes/{a}")
    disk = page.locator('#node-alert-settings tr[data-alert-rule="DISK_USAGE"]')
    disk.get_by_label("disk_usage threshold for this node").fill("150")
    disk.get_by_role("button", name="Save").click()
    expect(disk.locator("[data-error-for=threshold]")).to_contain_text("between 1 and 100")
    disk.get_by_label("disk_usage threshold for this node").fill("50")
    disk.get_by_role("button", name="Save").click()
    disk = page.locator('#node-alert-settings tr[data-alert-rule="DISK_USAGE"]')
    expect(disk.locator("[data-effective]")).to_have_text("on · 50.0")
    page.reload()
    expect(page.locator("#node-incidents tr[data-state=open]")).to_contain_text("disk_usage")
    expect(page.locator("[data-bell-count]")).to_have_text("2")

    # A member reads settings and incidents and cannot change them.
    member = org.add_member("MEMBER")
    context = browser.new_context()
    try:
        other = context.new_page()
        sign_in_as(other, base, member)
        other.goto(f"{base}/settings/alerts")
        row = other.locator('#alert-settings tr[data-alert-rule="NODE_DOWN"]')
        expect(row.get_by_label("node_down enabled")).to_be_disabled()
        expect(other.get_by_role("button", name="Save")).to_have_count(0)
        expect(other.locator("[data-bell-count]")).to_have_text("2")
    finally:
        context.close()

    # The owner turns node_down off for the organization: its incident resolves.
    page.goto(f"{base}/settings/alerts")
    row = page.locator('#alert-settings tr[data-alert-rule="NODE_DOWN"]')
    row.get_by_label("node_down enabled").uncheck()
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#toast")).to_have_text("Alert settings saved")
    page.goto(f"{base}/incidents?state=open")
    expect(page.locator("#incidents-table tbody tr[data-incident-id]")).to_have_count(1)
    expect(page.locator("#incidents-table")).to_contain_text("disk_usage")
    expect(page.locator("[data-bell-count]")).to_have_text("1")
    screenshot(page, "alerts-03-after-settings")
