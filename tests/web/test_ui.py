"""The web UI in a real browser, against a real control plane and a real agent running litecoind."""

import os
import re

from playwright.sync_api import Page, expect

from tests.support.agent import AgentProcess
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess
from tests.web.conftest import REPO, screenshot

LITECOIND_VERSION = "0.21.2.1"
NODE_NAME = "ltc-web"


def sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/nodes")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fnodes$"))
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("wrong email or password")
    screenshot(page, "01-signin-error")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/nodes")
    expect(page.get_by_role("heading", name="Nodes")).to_be_visible()


def mark_no_reload(page: Page) -> None:
    """Set a flag on the window: it survives only if the page is never reloaded."""
    page.evaluate("window.__noReload = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"


def nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def row(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#nodes-table tr[data-node-name="{name}"]')


def test_web_ui_end_to_end(page: Page, e2e_server: ServerProcess, web_agent: AgentProcess) -> None:
    base = e2e_server.url
    sign_in(page, base)

    # Deploy through the wizard; a bad name is refused with the API's message next to the field.
    page.get_by_role("link", name="Deploy node").click()
    expect(page.get_by_role("heading", name="Deploy node")).to_be_visible()
    page.get_by_label("Executor", exact=True).select_option(label=f"{web_agent.name} (online)")
    page.get_by_label("Chain").select_option("litecoin")
    page.get_by_label("Network").select_option("regtest")
    page.get_by_label("Node type").select_option("full")
    page.get_by_label("node client").select_option("litecoind")
    page.get_by_label("node version").select_option(LITECOIND_VERSION)
    expect(page.get_by_label("Storage size")).not_to_have_value("")
    expect(page.locator("#resource-warning")).to_be_visible()
    page.get_by_label("Extra flags for node").fill("-rpcport=1")
    expect(page.locator('[data-error-for="spec.overrides.args.node"]')).to_contain_text("managed")
    page.get_by_label("Extra flags for node").fill("-maxconnections=4")
    expect(page.locator('[data-error-for="spec.overrides.args.node"]')).to_be_empty()
    expect(page.locator("#w-review")).to_contain_text('"version": "0.21.2.1"')
    page.get_by_label("Node name").fill("A b")
    page.get_by_role("button", name="Create node").click()
    name_error = page.locator("#name-error")
    expect(name_error).to_contain_text("name must be a DNS-1123 label")
    screenshot(page, "02-deploy-wizard-error")
    page.get_by_label("Node name").fill(NODE_NAME)
    # A managed flag typed anyway: the API's refusal lands next to the overrides.
    page.get_by_label("Extra flags for node").fill("-rpcport=1")
    page.get_by_role("button", name="Create node").click()
    expect(page.locator('[data-error-for="spec.overrides"]')).to_contain_text("rpcport")
    expect(name_error).to_be_empty()
    page.get_by_label("Extra flags for node").fill("-maxconnections=4")
    page.get_by_role("button", name="Create node").click()

    # The detail page follows the node to running without a reload.
    expect(page.get_by_role("heading", name=NODE_NAME)).to_be_visible()
    mark_no_reload(page)
    badge = page.locator("#node-detail [data-phase]")
    expect(badge).to_have_text("running", timeout=90_000)
    expect(page.locator('[data-metric="peers"]')).to_have_text("0")
    expect(page.locator('[data-processes] tr[data-role="node"]')).to_contain_text("running")
    assert_not_reloaded(page)
    screenshot(page, "03-node-detail")

    # The nodes list: running, then stopped from the row menu, live.
    nav(page, "Nodes")
    mark_no_reload(page)
    expect(row(page, NODE_NAME).locator("[data-phase]")).to_have_text("running")
    screenshot(page, "04-nodes")
    # The README's picture is refreshed on request only, so a test run never dirties the tree.
    readme_shot = os.environ.get("NODEPLANE_UPDATE_README_SCREENSHOT") == "1"
    page.screenshot(
        path=str(REPO / "docs" / "screenshot-nodes.png")
        if readme_shot
        else str(REPO / "test-artifacts" / "screenshots" / "readme-nodes.png"),
        clip={"x": 0, "y": 0, "width": 1360, "height": 420},
    )
    row(page, NODE_NAME).get_by_role("button", name=f"More for {NODE_NAME}").click()
    menu = row(page, NODE_NAME).get_by_role("menu")
    expect(menu.get_by_role("menuitem", name="Start", exact=True)).to_be_disabled()
    expect(menu.get_by_role("menuitem", name="Restart", exact=True)).to_be_enabled()
    menu.get_by_role("menuitem", name="Stop", exact=True).click()
    expect(row(page, NODE_NAME).locator("[data-phase]")).to_have_text("stopped", timeout=60_000)
    assert_not_reloaded(page)
    row(page, NODE_NAME).get_by_role("button", name=f"More for {NODE_NAME}").click()
    expect(menu.get_by_role("menuitem", name="Start", exact=True)).to_be_enabled()
    expect(menu.get_by_role("menuitem", name="Stop", exact=True)).to_be_disabled()
    screenshot(page, "05-nodes-stopped-menu")

    # Delete, keeping the data: the dialog asks for the name first.
    menu.get_by_role("menuitem", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("resync")
    expect(dialog.get_by_label("Type the node's name to confirm")).to_be_focused()
    expect(dialog.get_by_role("button", name="Delete node")).to_be_disabled()
    dialog.get_by_label("Type the node's name to confirm").fill(NODE_NAME)
    expect(dialog.get_by_role("radio", name=re.compile("Keep data"))).to_be_checked()
    screenshot(page, "06-delete-dialog")
    dialog.get_by_role("button", name="Delete node").click()
    expect(row(page, NODE_NAME)).to_have_count(0, timeout=60_000)
    assert_not_reloaded(page)
    assert (web_agent.node_dir(NODE_NAME) / "data").exists(), "keep-data deleted the data"

    # Every step is on the Events page.
    nav(page, "Events")
    events = page.locator("#events-table")
    for event_type in (
        "node.created",
        "node.lifecycle.requested",
        "node.lifecycle.transition",
        "node.deleted",
        "node.removed",
    ):
        expect(events.locator(f'tr[data-event-type="{event_type}"]').first).to_be_visible()
    for message in ("running", "stopped"):
        expect(events.locator("tr", has_text=message).first).to_be_visible()
    screenshot(page, "07-events")
    page.get_by_label("Type").fill("node.created")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"type=node.created"))
    expect(events.locator("tbody tr")).to_have_count(1)

    # Executors: the agent is online; "Connect executor" shows a key once with the commands.
    nav(page, "Executors")
    agent_row = page.locator(f'#executors-table tr[data-executor-name="{web_agent.name}"]')
    expect(agent_row.locator("[data-status]")).to_have_text("online")
    expect(agent_row).to_contain_text("litecoin")
    screenshot(page, "08-executors")
    page.get_by_role("button", name="Connect executor").click()
    page.get_by_label("Host name").fill("host-2")
    page.get_by_role("button", name="Create executor key").click()
    expect(page.get_by_label("Executor key")).to_have_value(re.compile(r"^\w+"))
    commands = page.locator("#connect-commands")
    expect(commands).to_contain_text("nodeplane agent install")
    expect(commands).to_contain_text(f'url = "{base}"')
    screenshot(page, "09-connect-executor")
    page.get_by_role("button", name="Done").click()

    # API keys: create (shown once), see last used, revoke.
    nav(page, "API keys")
    page.get_by_label("Name").fill("ci-key")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-secret")).not_to_have_value("")
    key_row = page.locator("#keys-table tr", has_text="ci-key")
    expect(key_row).to_contain_text("active")
    agent_key = page.locator("#keys-table tr", has_text="web-agent").locator("[data-last-used]")
    expect(agent_key).to_contain_text("ago")
    screenshot(page, "10-api-keys")
    page.once("dialog", lambda d: d.accept())
    key_row.get_by_role("button", name="Revoke key ci-key").click()
    expect(page.locator("#keys-table tr", has_text="ci-key")).to_contain_text("revoked")

    # Sign out: pages send you back to sign-in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/signin")
    page.goto(f"{base}/events")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
