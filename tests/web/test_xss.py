"""Finding 2: stored XSS from an executor key to an admin's session. An executor synced a network
name holding `</script><script>…`; `/nodes/new` wrote it unescaped into a script element and the
script minted an API key in the admin's session.

In Chromium against a real server (SQLite and PostgreSQL): hostile text from every source an
executor or a user controls must render as inert text on every page that shows it. The
capabilities are also written straight into the executor's row, as an older version (before
capability strings had a pattern) could have stored them, so the pages are tested whatever the
protocol lets through.
"""

import uuid
from typing import Any

from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, update

from nodeplane.controlplane.store import models
from nodeplane.controlplane.store.database import sync_url
from nodeplane.protocol import (
    EventLevel,
    ExecutorKind,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
    SyncExecutorRequest,
)
from tests.support.fleet import CAPABILITIES, LITECOIN_SPEC, Org, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess
from tests.web.helpers import ThreadedFakeExecutor, create_node, sign_in_as

MINTED = "xss-minted"
# What the attacker's script does in the victim's session: mark the window, retitle the page,
# and mint an API key through the UI's own GraphQL endpoint. No double quotes or backslashes,
# so it stays valid JavaScript inside JSON, and no spaces, so it also works as an unquoted
# attribute value.
SCRIPT = (
    "window.__xss=(window.__xss||0)+1;document.title='pwned';"
    "fetch('/graphql',{method:'POST',credentials:'same-origin',"
    "headers:{'content-type':'application/json'},"
    "body:JSON.stringify({query:'mutation($n:String!){createApiKey(name:$n,kind:PERSONAL)"
    f"{{secret}}}}',variables:{{n:'{MINTED}'}}}})}})"
)
PAYLOAD = f"</script><script>{SCRIPT}</script><img src=x onerror={SCRIPT}>"
# The same attack aimed at attribute values and at the JSON in data attributes.
# For fields of at most 200 characters (a revision's cause).
SHORT_PAYLOAD = "</script><script>window.__xss=1</script><img src=x onerror=window.__xss=1>"
INJECTED_TAG = f"><img src=x onerror={SCRIPT}>"
ATTRIBUTE_PAYLOAD = f"x'\"{INJECTED_TAG}"

SYNC = """
mutation($input: JSON!) { syncExecutor(input: $input) { executor { id } } }"""
KEYS = "{ apiKeys { name } }"
UPDATE_NODE = "mutation($input: UpdateNodeInput!) { updateNode(input: $input) { revision } }"


def hostile_capabilities() -> dict[str, Any]:
    """Capabilities in wire form with hostile text in every string a page shows."""
    return {
        "chains": [
            {
                "chain": "litecoin",
                "networks": ["regtest", PAYLOAD],
                "nodeTypes": ["full"],
                "roles": [
                    {
                        "role": "node",
                        "required": True,
                        "clients": [
                            {
                                "name": "litecoind",
                                "versions": ["0.21.4", PAYLOAD],
                                "managedFlags": ["rpcport", PAYLOAD],
                                "managedConfigKeys": [],
                            }
                        ],
                    }
                ],
                "resourceDefaults": {},
            },
            {
                "chain": PAYLOAD,
                "networks": [ATTRIBUTE_PAYLOAD],
                "nodeTypes": ["full"],
                "roles": [
                    {
                        "role": ATTRIBUTE_PAYLOAD,
                        "required": True,
                        "clients": [
                            {
                                "name": PAYLOAD,
                                "versions": [ATTRIBUTE_PAYLOAD],
                                "managedFlags": [],
                                "managedConfigKeys": [],
                            }
                        ],
                    }
                ],
                "resourceDefaults": {},
            },
        ],
        "storageClasses": [PAYLOAD],
    }


def store_capabilities(database_url: str, executor_id: str, capabilities: dict[str, Any]) -> None:
    """Write `capabilities` into the executor's row, bypassing the protocol's validation."""
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            table = models.Base.metadata.tables["executors"]
            conn.execute(
                update(table)
                .where(table.c.id == uuid.UUID(executor_id))
                .values(capabilities=capabilities)
            )
    finally:
        engine.dispose()


def hostile_executor(server: ServerProcess, org: Org) -> str:
    """An executor of `org` whose stored capabilities are `hostile_capabilities()`; its id."""
    executor = Client(server.url, org.executor_key("hostile"))
    request = SyncExecutorRequest(
        name=unique("hostile"), kind=ExecutorKind.AGENT, version="1.0", capabilities=CAPABILITIES
    ).to_wire()
    executor_id: str = executor(SYNC, {"input": request})["syncExecutor"]["executor"]["id"]
    # Through the protocol, as the finding did: accepted by the version the issue was filed
    # against, refused with a typed error once capability strings follow a pattern.
    try:
        executor(SYNC, {"input": {**request, "capabilities": hostile_capabilities()}})
    except GraphQLError as exc:
        assert exc.code in ("invalid_input", "bad_request"), exc.errors
    # Either way, the row holds them, as rows written before the pattern existed do.
    store_capabilities(server.database_url, executor_id, hostile_capabilities())
    return executor_id


def assert_no_script_ran(page: Page, title: str, org: Org) -> None:
    assert page.evaluate("window.__xss") is None, "the payload ran in the page"
    assert page.title() == title
    names = [k["name"] for k in org.owner(KEYS)["apiKeys"]]
    assert MINTED not in names, "the payload minted an API key"


def test_hostile_capabilities_render_as_text(page: Page, server: ServerProcess, org: Org) -> None:
    base = server.url
    hostile_executor(server, org)
    sign_in_as(page, base, org.owner)

    # The page of the finding: the deploy wizard, whose data sits in a JSON script element.
    page.goto(f"{base}/nodes/new")
    assert_no_script_ran(page, "Deploy node · nodeplane", org)
    # The only executor is chosen for the user; every hostile string is an inert option.
    chain = page.get_by_label("Chain")
    expect(chain.locator("option")).to_have_count(2)
    chain.select_option("litecoin")
    network = page.get_by_label("Network")
    network.select_option(PAYLOAD)
    expect(network).to_have_value(PAYLOAD)
    page.get_by_label("node version").select_option(PAYLOAD)
    expect(page.locator("#w-review")).to_contain_text("</script><script>")
    chain.select_option(PAYLOAD)
    expect(network).to_have_value(ATTRIBUTE_PAYLOAD)
    role_client = page.get_by_label(f"{ATTRIBUTE_PAYLOAD} client")
    expect(role_client).to_have_value(PAYLOAD)
    expect(page.get_by_label(f"{ATTRIBUTE_PAYLOAD} version")).to_have_value(ATTRIBUTE_PAYLOAD)
    page.get_by_label(f"Extra flags for {ATTRIBUTE_PAYLOAD}").fill("-printtoconsole")
    expect(page.locator("#w-review")).to_contain_text("-printtoconsole")
    assert_no_script_ran(page, "Deploy node · nodeplane", org)

    # Executors list the chains and networks; the nodes page offers the chains as filters.
    page.goto(f"{base}/executors")
    expect(page.locator("#executors-table")).to_contain_text("</script><script>window.__xss")
    assert_no_script_ran(page, "Executors · nodeplane", org)
    page.goto(f"{base}/nodes")
    expect(page.get_by_label("Chain", exact=True).locator("option")).to_have_count(3)
    page.get_by_label("Chain", exact=True).select_option(PAYLOAD)
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("list", name="Active filters")).to_contain_text("</script><script>")
    assert_no_script_ran(page, "Nodes · nodeplane", org)


def test_hostile_node_text_renders_as_text(page: Page, server: ServerProcess, org: Org) -> None:
    """What users type (override args, a revision's cause) and what an executor reports (apply
    errors, process messages, event messages) on the node and events pages."""
    base = server.url
    executor = ThreadedFakeExecutor(server.url, org.executor_key("host"), name=unique("host"))
    executor.sync()
    spec = {**LITECOIN_SPEC, "overrides": {"args": {"node": [f"-uacomment={PAYLOAD}"]}}}
    node_id = create_node(org, executor, "hostile", spec)
    org.owner(
        UPDATE_NODE,
        {
            "input": {
                "nodeId": node_id,
                "overrides": {"args": {"node": [f"-uacomment={ATTRIBUTE_PAYLOAD}"]}},
                "expectedRevision": 1,
                "cause": SHORT_PAYLOAD,
            }
        },
    )
    executor.sync(
        {
            node_id: ObservedNodeState(
                revision=1,
                processes=[
                    ObservedProcess(
                        role="node", status=ProcessStatus.ERROR, message=ATTRIBUTE_PAYLOAD
                    )
                ],
                apply_error=PAYLOAD,
            )
        }
    )
    executor.report(
        RuntimeEvent(
            node_id=uuid.UUID(node_id),
            type="node.apply.failed",
            level=EventLevel.ERROR,
            message=PAYLOAD,
        )
    )
    sign_in_as(page, base, org.owner)

    page.goto(f"{base}/nodes/{node_id}")
    assert_no_script_ran(page, "hostile · nodeplane", org)
    # JSON shows a double quote as \", so these look for the part of the payload without one.
    expect(page.locator("pre.json")).to_contain_text(f"-uacomment=x'\\\"{INJECTED_TAG}")
    expect(page.locator("[data-apply-error]")).to_have_text(PAYLOAD)
    expect(page.locator('[data-processes] tr[data-role="node"]')).to_contain_text(ATTRIBUTE_PAYLOAD)
    history = page.locator("section.card", has=page.get_by_role("heading", name="Revision history"))
    expect(history.locator("tbody tr").first.locator("td").nth(2)).to_have_text(SHORT_PAYLOAD)
    events = page.locator("section.card", has=page.get_by_role("heading", name="Events"))
    expect(events.locator("tbody")).to_contain_text(PAYLOAD)
    # The diff is built by app.js from the API's answer.
    history.get_by_label("From", exact=True).select_option("1")
    history.get_by_label("To", exact=True).select_option("2")
    history.get_by_role("button", name="Show diff").click()
    expect(history.locator("[data-diff-result] table")).to_contain_text(INJECTED_TAG)
    assert_no_script_ran(page, "hostile · nodeplane", org)

    page.goto(f"{base}/events")
    expect(page.locator("#events-table")).to_contain_text(PAYLOAD)
    assert_no_script_ran(page, "Events · nodeplane", org)


def test_csp_refuses_a_script_that_got_in_anyway(
    page: Page, server: ServerProcess, org: Org, csp_violations: list[str]
) -> None:
    """The second line of defence: had escaping failed, the page's policy would refuse inline
    scripts, inline handlers and HTML sinks, and Chromium would report it."""
    sign_in_as(page, server.url, org.owner)
    page.goto(f"{server.url}/nodes")
    outcome = page.evaluate(
        """() => {
          const tried = [];
          const attempt = (what, fn) => { try { fn(); tried.push(what + ": allowed"); }
                                          catch (e) { tried.push(what + ": " + e.name); } };
          attempt("inline script", () => {
            const s = document.createElement("script"); s.textContent = "window.__xss = 1";
            document.body.append(s); });
          attempt("innerHTML", () => { document.body.insertAdjacentHTML("beforeend",
            "<img src=x onerror='window.__xss = 1'>"); });
          attempt("handler attribute", () => {
            document.body.setAttribute("onclick", "window.__xss = 1"); document.body.click(); });
          return tried;
        }"""
    )
    assert outcome == [
        "inline script: TypeError",
        "innerHTML: TypeError",
        "handler attribute: TypeError",
    ], outcome
    page.wait_for_timeout(200)
    assert page.evaluate("window.__xss") is None
    assert any("require-trusted-types-for" in v for v in csp_violations), csp_violations
    csp_violations.clear()
