"""Short helpers for the GraphQL calls the control-plane tests make most, and a wait loop."""

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.support.fleet import CREATE_NODE, EVENTS, LIFECYCLE, LITECOIN_SPEC, NODE, FakeExecutor
from tests.support.gql import Client

T = TypeVar("T")

EXECUTOR = """
query($id: UUID!) { executor(id: $id) { id name kind version status lastSyncAt nodeCount } }"""
REVISIONS = """
query($id: UUID!) { nodeRevisions(nodeId: $id) { revision spec author cause createdAt } }"""


def deploy(
    client: Client, executor: FakeExecutor, name: str, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create a node on `executor` (revision 1)."""
    data = client(
        CREATE_NODE,
        {"input": {"executorId": executor.id, "name": name, "spec": spec or LITECOIN_SPEC}},
    )
    node: dict[str, Any] = data["createNode"]
    return node


def get_node(client: Client, node_id: str) -> dict[str, Any]:
    """A node the caller can see (fails the test if it cannot)."""
    node: dict[str, Any] | None = client(NODE, {"id": node_id})["node"]
    assert node is not None, f"node {node_id} not visible"
    return node


def act(client: Client, node_id: str, action: str, expected: int | None = None) -> dict[str, Any]:
    """A lifecycle action (STOP, START, RESTART), optionally at an expected revision."""
    node: dict[str, Any] = client(
        LIFECYCLE, {"id": node_id, "action": action, "expected": expected}
    )["requestNodeLifecycleAction"]
    return node


def revisions(client: Client, node_id: str) -> list[dict[str, Any]]:
    """A node's spec history, oldest first."""
    rows: list[dict[str, Any]] = client(REVISIONS, {"id": node_id})["nodeRevisions"]
    return rows


def executor_view(client: Client, executor_id: str) -> dict[str, Any]:
    """An executor as the API shows it (status, kind, lastSyncAt...)."""
    row: dict[str, Any] | None = client(EXECUTOR, {"id": executor_id})["executor"]
    assert row is not None, f"executor {executor_id} not visible"
    return row


def event_page(
    client: Client, flt: dict[str, Any] | None = None, first: int = 50, after: str | None = None
) -> dict[str, Any]:
    """One page of the events feed: {items, pageInfo}."""
    page: dict[str, Any] = client(EVENTS, {"filter": flt or {}, "first": first, "after": after})[
        "events"
    ]
    return page


def all_events(client: Client, page_size: int = 200, **flt: Any) -> list[dict[str, Any]]:
    """Every event matching `flt`, newest first, following the cursor to the end."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = event_page(client, flt, first=page_size, after=after)
        items += page["items"]
        if not page["pageInfo"]["hasNextPage"]:
            return items
        after = page["pageInfo"]["endCursor"]


def wait_until(
    probe: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
