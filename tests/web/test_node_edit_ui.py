"""Changing a node from its page in a real browser: the Edit dialog shows the diff against the
current revision before saving, saving makes a revision, a row of the revisions panel rolls back,
and while a change is in flight the page says what is changing and since when.

The node runs on a protocol-level `FakeExecutor` (no real processes): the test decides what it
observes. Real client processes changing versions are tests/e2e/test_upgrade_e2e.py's.
"""

import json

import pytest
from playwright.sync_api import Page, expect

from nodeplane.protocol import ProcessStatus
from tests.support.fleet import LITECOIN_SPEC, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess
from tests.web.conftest import screenshot
from tests.web.helpers import create_node, fake_executor, sign_in_as

REVISIONS = """
query($id: UUID!) { nodeRevisions(nodeId: $id) { revision cause spec } }"""


@pytest.fixture
def org(e2e_server: ServerProcess, e2e_admin: Client) -> Org:
    return make_org(e2e_server.url, e2e_admin)


def test_edit_with_diff_then_roll_back_from_the_revisions_panel(
    page: Page, e2e_server: ServerProcess, org: Org, csp_violations: list[str]
) -> None:
    base = e2e_server.url
    executor = fake_executor(org, "host")
    node_id = create_node(org, executor, "ltc-edit-ui", LITECOIN_SPEC)
    executor.observe(node_id, 1, ProcessStatus.RUNNING)
    sign_in_as(page, base, org.owner)
    page.goto(f"{base}/nodes/{node_id}")
    expect(page.get_by_role("heading", name="ltc-edit-ui")).to_be_visible()
    expect(page.locator("[data-pending]")).to_be_hidden()

    # Edit: a new version, a flag and autoRollback; the review says "3 changes" before saving.
    page.get_by_role("button", name="Edit…").click()
    dialog = page.locator("#edit-dialog")
    expect(dialog).to_be_visible()
    # The versions the executor declares are offered; choosing one writes it into the spec.
    versions = dialog.get_by_label("node (litecoind)")
    expect(versions.locator("option")).to_have_text(["0.21.4 (current)", "0.21.3"])
    versions.select_option("0.21.3")
    text = dialog.get_by_label("Spec").input_value()
    spec = json.loads(text)
    assert "desiredState" not in spec and spec["clients"]["node"]["version"] == "0.21.3"
    spec["overrides"]["args"] = {"node": ["-maxconnections=8"]}
    spec["rollout"]["autoRollback"] = True
    dialog.get_by_label("Spec").fill(json.dumps(spec, indent=2))
    dialog.get_by_label("Why (kept with the revision)").fill("upgrade <b>litecoind</b>")
    save = dialog.get_by_role("button", name="Save revision")
    expect(save).to_be_disabled()
    dialog.get_by_role("button", name="Review changes").click()
    expect(dialog.locator("[data-change-count]")).to_have_text("3 changes")
    rows = dialog.locator("[data-edit-review] tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator("td").nth(0)).to_have_text("clients.node.version")
    expect(rows.nth(0).locator("td").nth(2)).to_have_text('"0.21.3"')
    screenshot(page, "30-node-edit-diff")
    expect(save).to_be_enabled()

    # An edit the rules refuse says why and cannot be saved.
    bad = {**spec, "storage": {**spec["storage"], "size": "1Gi"}}
    dialog.get_by_label("Spec").fill(json.dumps(bad))
    expect(save).to_be_disabled()
    dialog.get_by_role("button", name="Review changes").click()
    expect(dialog.locator("[data-edit-error]")).to_contain_text("storage cannot shrink")
    expect(save).to_be_disabled()

    dialog.get_by_label("Spec").fill(json.dumps(spec))
    dialog.get_by_role("button", name="Review changes").click()
    expect(dialog.locator("[data-change-count]")).to_have_text("3 changes")
    save.click()
    expect(page.locator("[data-revision]")).to_have_text("2")
    history = org.owner(REVISIONS, {"id": node_id})["nodeRevisions"]
    assert [(h["revision"], h["cause"]) for h in history] == [
        (1, "created"),
        (2, "upgrade <b>litecoind</b>"),
    ]
    assert history[-1]["spec"]["clients"]["node"]["version"] == "0.21.3"
    panel = page.locator("section.card", has=page.get_by_role("heading", name="Revision history"))
    expect(panel.locator("tbody tr").first.locator("td").nth(2)).to_have_text(
        "upgrade <b>litecoind</b>"
    )

    # In flight: the executor still runs revision 1; the page says what changes and since when.
    pending = page.locator("[data-pending]")
    expect(pending).to_be_visible()
    expect(pending.locator("[data-pending-summary]")).to_contain_text(
        "from revision 1 to 2: 3 changes, since"
    )
    expect(pending.locator("tbody tr")).to_have_count(3)
    screenshot(page, "31-node-change-in-flight")
    executor.observe(node_id, 2, ProcessStatus.RUNNING)
    expect(pending).to_be_hidden(timeout=10_000)

    # Roll back from the revisions panel: the dialog shows what goes back, then a revision 3.
    panel.get_by_role("button", name="Roll back to revision 1").click()
    rollback = page.locator("#rollback-dialog")
    expect(rollback.locator("[data-change-count]")).to_have_text("3 changes")
    screenshot(page, "32-node-rollback-dialog")
    rollback.get_by_role("button", name="Roll back").click()
    expect(page.locator("[data-revision]")).to_have_text("3")
    history = org.owner(REVISIONS, {"id": node_id})["nodeRevisions"]
    assert history[-1]["cause"] == "rollback"
    assert history[-1]["spec"]["clients"]["node"]["version"] == "0.21.4"
    expect(panel.locator("tbody tr").first.locator("td").nth(2)).to_have_text("rollback")
    assert csp_violations == []


def test_members_see_no_edit_or_roll_back(page: Page, e2e_server: ServerProcess, org: Org) -> None:
    executor = fake_executor(org, "host")
    node_id = create_node(org, executor, "ltc-readonly", LITECOIN_SPEC)
    org.owner(
        "mutation($i: UpdateNodeInput!) { updateNode(input: $i) { revision } }",
        {"i": {"nodeId": node_id, "resources": {"cpuLimit": "2"}}},
    )
    sign_in_as(page, e2e_server.url, org.add_member("MEMBER"))
    page.goto(f"{e2e_server.url}/nodes/{node_id}")
    expect(page.get_by_role("button", name="Edit…")).to_be_disabled()
    expect(page.get_by_role("button", name="Roll back to revision 1")).to_be_disabled()
