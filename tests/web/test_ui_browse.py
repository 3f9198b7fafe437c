"""Browsing in a real browser: the nodes list's search, filters and sorting, a node's revision
history and diff, and the events feed's paging and level filter.

The nodes come from the GraphQL API on a protocol-level `FakeExecutor` (no real processes), each
test in an organization of its own on the module's control plane.
"""

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Locator, Page, expect

from nodeplane.protocol import EventLevel, ProcessStatus, RuntimeEvent
from tests.e2e.conftest import wait_for
from tests.support.fleet import ETHEREUM_SPEC, EVENTS, LIFECYCLE, LITECOIN_SPEC, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess
from tests.web.conftest import screenshot
from tests.web.helpers import create_node, fake_executor, sign_in_as

UPDATE_NODE = """
mutation($input: UpdateNodeInput!) { updateNode(input: $input) { id revision } }"""
REVISIONS = """
query($id: UUID!) { nodeRevisions(nodeId: $id) { revision author cause } }"""
DIFF = """
query($id: UUID!, $a: Int!, $b: Int!) {
  nodeRevisionDiff(nodeId: $id, fromRevision: $a, toRevision: $b) { path before after } }"""


@pytest.fixture
def org(e2e_server: ServerProcess, e2e_admin: Client) -> Org:
    """A fresh organization: its nodes, executors and events are this test's alone."""
    return make_org(e2e_server.url, e2e_admin)


def node_names(page: Page) -> Locator:
    return page.locator("#nodes-table tbody tr[data-node-name] .node-link")


def chips(page: Page) -> Locator:
    return page.get_by_role("list", name="Active filters").locator("li")


def test_nodes_search_filters_and_sorting(page: Page, e2e_server: ServerProcess, org: Org) -> None:
    base = e2e_server.url
    exa = fake_executor(org, "exa")
    exb = fake_executor(org, "exb")
    alpha = create_node(org, exa, "ltc-alpha", LITECOIN_SPEC)
    create_node(org, exa, "ltc-charlie", LITECOIN_SPEC)  # never observed: provisioning
    bravo = create_node(org, exb, "ltc-bravo", LITECOIN_SPEC)
    create_node(org, exb, "eth-delta", ETHEREUM_SPEC)  # never observed: provisioning
    exa.observe(alpha, 1, ProcessStatus.RUNNING)
    exb.observe(bravo, 1, ProcessStatus.RUNNING)
    sign_in_as(page, base, org.owner)

    page.goto(f"{base}/nodes")
    expect(node_names(page)).to_have_text(["eth-delta", "ltc-alpha", "ltc-bravo", "ltc-charlie"])
    expect(page.locator('tr[data-node-name="ltc-alpha"] [data-phase]')).to_have_text("running")
    expect(page.locator('tr[data-node-name="ltc-charlie"] [data-phase]')).to_have_text(
        "provisioning"
    )

    # Search by name: a substring narrows the rows, and it is kept in the URL.
    search = page.get_by_label("Search by name")
    search.fill("ltc")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"[?&]q=ltc(&|$)"))
    expect(node_names(page)).to_have_text(["ltc-alpha", "ltc-bravo", "ltc-charlie"])
    search = page.get_by_label("Search by name")
    expect(search).to_have_value("ltc")
    search.fill("bra")
    search.press("Enter")
    expect(node_names(page)).to_have_text(["ltc-bravo"])
    page.get_by_label("Search by name").fill("no-such-node")
    page.get_by_label("Search by name").press("Enter")
    expect(page.locator("#nodes-table tbody")).to_contain_text("No nodes match these filters.")
    page.get_by_label("Search by name").fill("")
    page.get_by_role("button", name="Apply").click()
    expect(page).not_to_have_url(re.compile(r"q=no-such-node"))
    expect(node_names(page)).to_have_count(4)
    expect(page.get_by_role("list", name="Active filters")).to_have_count(0)

    # Chain, phase and executor filters: chips, kept in the URL and across a reload.
    page.get_by_label("Chain", exact=True).select_option("litecoin")
    page.get_by_label("Phase", exact=True).select_option("running")
    page.get_by_label("Executor", exact=True).select_option(label=exa.name)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"chain=litecoin"))
    url = page.url
    assert "phase=running" in url and f"executor={exa.id}" in url, url
    expect(node_names(page)).to_have_text(["ltc-alpha"])
    expect(chips(page)).to_have_text(
        [re.compile(r"chain:\s*litecoin"), re.compile(r"phase:\s*running"), re.compile(exa.name)]
    )
    page.reload()
    expect(page).to_have_url(url)
    expect(chips(page)).to_have_count(3)
    expect(page.get_by_label("Chain", exact=True)).to_have_value("litecoin")
    expect(page.get_by_label("Phase", exact=True)).to_have_value("running")
    expect(page.get_by_label("Executor", exact=True)).to_have_value(str(exa.id))
    expect(node_names(page)).to_have_text(["ltc-alpha"])
    screenshot(page, "11-nodes-filter-chips")

    # Removing a chip removes that filter only.
    page.get_by_role("link", name=f"Remove filter executor {exa.name}").click()
    expect(page).not_to_have_url(re.compile(r"executor="))
    expect(page).to_have_url(re.compile(r"chain=litecoin.*phase=running|phase=running.*chain="))
    expect(chips(page)).to_have_count(2)
    expect(node_names(page)).to_have_text(["ltc-alpha", "ltc-bravo"])
    page.get_by_role("link", name="Remove filter phase running").click()
    expect(page).to_have_url(f"{base}/nodes?chain=litecoin")
    expect(chips(page)).to_have_text([re.compile(r"chain:\s*litecoin")])
    expect(node_names(page)).to_have_text(["ltc-alpha", "ltc-bravo", "ltc-charlie"])
    page.get_by_role("link", name="Remove filter chain litecoin").click()
    expect(page).to_have_url(f"{base}/nodes")
    expect(chips(page)).to_have_count(0)
    expect(node_names(page)).to_have_count(4)

    # Sortable headers: executor ascending, then descending, then phase.
    headers = page.locator("#nodes-table thead")
    headers.get_by_role("link", name="Executor").click()
    expect(page).to_have_url(f"{base}/nodes?sort=executor")
    expect(headers.locator('th[aria-sort="ascending"]')).to_contain_text("Executor")
    expect(node_names(page)).to_have_text(["ltc-alpha", "ltc-charlie", "eth-delta", "ltc-bravo"])
    headers.get_by_role("link", name="Executor").click()
    expect(page).to_have_url(f"{base}/nodes?sort=executor&dir=desc")
    expect(headers.locator('th[aria-sort="descending"]')).to_contain_text("Executor")
    expect(node_names(page)).to_have_text(["ltc-bravo", "eth-delta", "ltc-charlie", "ltc-alpha"])
    screenshot(page, "12-nodes-sorted")
    headers.get_by_role("link", name="Phase").click()
    expect(page).to_have_url(f"{base}/nodes?sort=phase")
    expect(node_names(page)).to_have_text(["eth-delta", "ltc-charlie", "ltc-alpha", "ltc-bravo"])
    headers.get_by_role("link", name="Name").click()
    expect(page).to_have_url(f"{base}/nodes")
    expect(node_names(page)).to_have_text(["eth-delta", "ltc-alpha", "ltc-bravo", "ltc-charlie"])
    # Sorting keeps the filters, and filtering keeps the sort.
    headers.get_by_role("link", name="Name").click()
    expect(page).to_have_url(f"{base}/nodes?dir=desc")
    page.get_by_label("Chain", exact=True).select_option("litecoin")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"chain=litecoin"))
    expect(page).to_have_url(re.compile(r"dir=desc"))
    expect(node_names(page)).to_have_text(["ltc-charlie", "ltc-bravo", "ltc-alpha"])


def test_a_long_nodes_list_pages_and_follows_changes_on_its_page(
    page: Page, e2e_server: ServerProcess, org: Org
) -> None:
    """201 nodes: the first page shows 100 of them and says so; Next and Previous walk the list,
    keeping the search and the page size. On the last page its row follows its node from the
    stream, while a change to a node of another page neither takes the page afresh nor makes
    a GraphQL poll (issue 8: the page once showed up to 1,000 rows and cut the rest)."""
    base = e2e_server.url
    executor = fake_executor(org, "long")
    ids = [create_node(org, executor, f"n-{i:03d}", LITECOIN_SPEC) for i in range(201)]
    sign_in_as(page, base, org.owner)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(urlsplit(r.url).path))

    page.goto(f"{base}/nodes")
    shown = page.locator("#nodes-range")
    pager = page.get_by_role("navigation", name="Pages")
    expect(node_names(page)).to_have_count(100)
    expect(node_names(page).first).to_have_text("n-000")
    expect(node_names(page).last).to_have_text("n-099")
    expect(shown).to_have_text("Rows 1\N{EN DASH}100 of 201")
    expect(pager.get_by_role("link", name="← Previous")).to_have_count(0)
    pager.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(f"{base}/nodes?page=2")
    expect(shown).to_have_text("Rows 101\N{EN DASH}200 of 201")
    expect(node_names(page).first).to_have_text("n-100")
    pager.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(f"{base}/nodes?page=3")
    expect(node_names(page)).to_have_text(["n-200"])
    expect(pager.get_by_role("link", name="Next →")).to_have_count(0)
    screenshot(page, "13-nodes-last-page")

    page.wait_for_load_state("load")
    loaded = len(requests)
    page.evaluate("window.__noReload = true")
    last = page.locator('tr[data-node-name="n-200"] [data-phase]')
    expect(last).to_have_text("provisioning")
    executor.observe(ids[0], 1, ProcessStatus.RUNNING)  # on page 1: not this page's row
    executor.observe(ids[-1], 1, ProcessStatus.RUNNING)
    expect(last).to_have_text("running", timeout=15_000)
    page.wait_for_timeout(2500)  # longer than a poll's interval: none may follow
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"
    assert [p for p in requests[loaded:] if p in ("/graphql", "/nodes")] == []
    expect(node_names(page)).to_have_text(["n-200"])

    # Previous; then a search starts again at page 1, and a smaller page size is kept by Next.
    pager.get_by_role("link", name="← Previous").click()
    expect(page).to_have_url(f"{base}/nodes?page=2")
    search = page.get_by_label("Search by name")
    search.fill("n-1")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"/nodes\?q=n-1&"))  # the form's empty filters too
    assert "page=" not in page.url, page.url
    expect(shown).to_have_text("Rows 1\N{EN DASH}100 of 100")
    expect(pager.get_by_role("link", name="Next →")).to_have_count(0)
    pager.get_by_role("link", name="50 rows per page").click()
    expect(page).to_have_url(f"{base}/nodes?q=n-1&per_page=50")
    expect(shown).to_have_text("Rows 1\N{EN DASH}50 of 100")
    pager.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(f"{base}/nodes?q=n-1&per_page=50&page=2")
    expect(shown).to_have_text("Rows 51\N{EN DASH}100 of 100")
    expect(node_names(page).first).to_have_text("n-150")
    expect(page.get_by_label("Search by name")).to_have_value("n-1")


def test_node_revision_history_and_diff(page: Page, e2e_server: ServerProcess, org: Org) -> None:
    base = e2e_server.url
    executor = fake_executor(org, "host")
    node_id = create_node(org, executor, "ltc-revs", LITECOIN_SPEC)
    executor.observe(node_id, 1, ProcessStatus.RUNNING)
    updated = org.owner(
        UPDATE_NODE,
        {
            "input": {
                "nodeId": node_id,
                "overrides": {"args": {"node": ["-maxconnections=4"]}},
                "expectedRevision": 1,
                "cause": "fewer peers",
            }
        },
    )["updateNode"]
    assert updated["revision"] == 2
    revisions = sorted(
        org.owner(REVISIONS, {"id": node_id})["nodeRevisions"], key=lambda r: -r["revision"]
    )
    assert [r["revision"] for r in revisions] == [2, 1]
    assert revisions[0]["cause"] == "fewer peers"
    assert all(r["author"] for r in revisions)
    changes = org.owner(DIFF, {"id": node_id, "a": 1, "b": 2})["nodeRevisionDiff"]
    assert [c["path"] for c in changes] == ["overrides.args.node"]
    sign_in_as(page, base, org.owner)

    page.goto(f"{base}/nodes/{node_id}")
    expect(page.get_by_role("heading", name="ltc-revs")).to_be_visible()
    expect(page.locator("[data-revision]")).to_have_text("2")
    history = page.locator("section.card", has=page.get_by_role("heading", name="Revision history"))
    rows = history.locator("table tbody tr")
    expect(rows).to_have_count(2)
    for row, revision in zip((rows.nth(0), rows.nth(1)), revisions, strict=True):
        cells = row.locator("td")
        expect(cells.nth(0)).to_have_text(str(revision["revision"]))
        expect(cells.nth(1)).to_have_text(revision["author"])
        expect(cells.nth(2)).to_have_text(revision["cause"])
    expect(rows.nth(0).locator("td").nth(2)).to_have_text("fewer peers")

    # Revisions 1 → 2: the changed path, before and after.
    history.get_by_label("From", exact=True).select_option("1")
    history.get_by_label("To", exact=True).select_option("2")
    history.get_by_role("button", name="Show diff").click()
    diff = history.locator("[data-diff-result] table")
    expect(diff.locator("thead")).to_contain_text("Revision 1")
    expect(diff.locator("thead")).to_contain_text("Revision 2")
    diff_rows = diff.locator("tbody tr")
    expect(diff_rows).to_have_count(1)
    expect(diff_rows.locator("td").nth(0)).to_have_text("overrides.args.node")
    expect(diff_rows.locator("td").nth(1)).to_have_text("—")
    expect(diff_rows.locator("td").nth(2)).to_contain_text("-maxconnections=4")
    screenshot(page, "13-node-revision-diff")

    # The same revision on both sides: no differences.
    history.get_by_label("From", exact=True).select_option("2")
    history.get_by_role("button", name="Show diff").click()
    expect(history.locator("[data-diff-result]")).to_have_text("No differences.")


def test_events_paging_and_level_filter(page: Page, e2e_server: ServerProcess, org: Org) -> None:
    base = e2e_server.url
    executor = fake_executor(org, "host")
    node_id = create_node(org, executor, "ltc-events", LITECOIN_SPEC)
    ticks = [
        RuntimeEvent(
            node_id=uuid.UUID(node_id),
            type="node.sync.stalled",
            level=EventLevel.WARN if i % 10 == 0 else EventLevel.INFO,
            message=f"tick {i:03d}",
        )
        for i in range(70)
    ]
    assert executor.report(*ticks) == 70
    # The fake stops syncing: wait for the disconnect, so no event lands while we page.
    wait_for(
        lambda: org.owner(EVENTS, {"filter": {"type": "executor.disconnected"}})["events"]["items"],
        timeout=60,
        what="executor.disconnected",
    )
    feed: list[dict[str, Any]] = org.owner(EVENTS, {"first": 200})["events"]["items"]
    assert 50 < len(feed) <= 100, len(feed)
    sign_in_as(page, base, org.owner)

    page.goto(f"{base}/events")
    rows = page.locator("#events-table tbody tr[data-event-type]")
    messages = rows.locator("td:nth-child(5)")
    expect(rows).to_have_count(50)
    expect(messages).to_have_text([e["message"] for e in feed[:50]])
    first_page = messages.all_inner_texts()
    expect(page.get_by_role("link", name="← Newest")).to_have_count(0)
    screenshot(page, "14-events-page-1")

    page.get_by_role("link", name="Older →").click()
    expect(page).to_have_url(re.compile(r"/events\?after=\d+$"))
    expect(rows).to_have_count(len(feed) - 50)
    expect(messages).to_have_text([e["message"] for e in feed[50:]])
    second_page = messages.all_inner_texts()
    ticks_seen = [m for m in first_page + second_page if m.startswith("tick ")]
    assert sorted(ticks_seen) == sorted(t.message for t in ticks), "a tick is missing or repeated"
    expect(page.get_by_role("link", name="Older →")).to_have_count(0)
    expect(page.get_by_role("link", name="← Newest")).to_be_visible()
    screenshot(page, "15-events-page-2")
    page.get_by_role("link", name="← Newest").click()
    expect(page).to_have_url(f"{base}/events")
    expect(messages).to_have_text(first_page)

    # Level filter: only warnings, in the URL; paging is not needed for eight of them.
    warnings = [e for e in feed if e["level"] == "WARN"]
    assert len(warnings) == 8  # seven ticks and the disconnect
    page.get_by_label("Level", exact=True).select_option("warn")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/events\?level=warn"))
    expect(rows).to_have_count(len(warnings))
    expect(rows.locator("td:nth-child(2)")).to_have_text(["warn"] * len(warnings))
    expect(messages).to_have_text([e["message"] for e in warnings])
    expect(page.get_by_role("link", name="Older →")).to_have_count(0)
    screenshot(page, "16-events-warn")
    page.get_by_label("Level", exact=True).select_option("error")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"level=error"))
    # The one error: the silent executor hosts a node, so its disconnect opened executor_offline.
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-event-type", "notification.alert.opened")
    expect(messages).to_have_text(re.compile(r"^executor_offline opened: executor "))
    page.get_by_label("Type").fill("node.*")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#events-table tbody")).to_have_text("No events.")
    page.get_by_role("link", name="Clear").click()
    expect(page).to_have_url(f"{base}/events")
    expect(rows).to_have_count(50)


def test_the_nodes_page_follows_changes_from_its_stream_alone(
    page: Page, e2e_server: ServerProcess, org: Org
) -> None:
    """Rows pushed by /nodes/stream update the open page in place: after it loads, the page asks
    neither /graphql nor /nodes again while a node starts and then stops (issue 8)."""
    base = e2e_server.url
    executor = fake_executor(org, "live")
    ids = {name: create_node(org, executor, name, LITECOIN_SPEC) for name in ("la", "lb", "lc")}
    sign_in_as(page, base, org.owner)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{base}/nodes")
    expect(node_names(page)).to_have_count(3)
    page.wait_for_load_state("load")
    loaded = len(requests)
    page.evaluate("window.__noReload = true")
    badge = page.locator('tr[data-node-name="lb"] [data-phase]')
    expect(badge).to_have_text("provisioning")

    executor.observe(ids["lb"], 1, ProcessStatus.RUNNING)
    expect(badge).to_have_text("running", timeout=10_000)
    org.owner(LIFECYCLE, {"id": ids["lb"], "action": "STOP"})
    expect(badge).to_have_text("stopping", timeout=10_000)
    row = page.locator('tr[data-node-name="lb"]')
    expect(row.locator("[data-markers]")).to_contain_text("pending change")
    page.wait_for_timeout(2500)  # longer than a poll's interval: none may follow either

    after = [urlsplit(u) for u in requests[loaded:]]
    assert [u.path for u in after if u.path in ("/graphql", "/nodes")] == []
    assert any(urlsplit(u).path == "/nodes/stream" for u in requests)
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"
    expect(page.locator('tr[data-node-name="la"] [data-phase]')).to_have_text("provisioning")


def test_without_eventsource_the_nodes_page_falls_back_to_polling(
    page: Page, e2e_server: ServerProcess, org: Org
) -> None:
    base = e2e_server.url
    executor = fake_executor(org, "nosse")
    node_id = create_node(org, executor, "ns", LITECOIN_SPEC)
    sign_in_as(page, base, org.owner)
    page.add_init_script("delete window.EventSource")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(urlsplit(r.url).path))
    page.goto(f"{base}/nodes")
    badge = page.locator('tr[data-node-name="ns"] [data-phase]')
    expect(badge).to_have_text("provisioning")
    executor.observe(node_id, 1, ProcessStatus.RUNNING)
    expect(badge).to_have_text("running", timeout=10_000)
    assert "/graphql" in requests
    assert "/nodes/stream" not in requests
