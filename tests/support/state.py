"""What an organization holds, read through the API and the database, to prove a refused call
wrote nothing."""

from typing import Any

from tests.support.db import heartbeat_noise, org_row_counts
from tests.support.fleet import EVENTS, Org

NODES_STATE = """
{ nodes(first: 200) { items { id name revision desiredState deletedAt spec } pageInfo { hasNextPage } } }"""
REVISIONS = "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision spec cause } }"


def all_events(org: Org) -> list[dict[str, Any]]:
    """Every event of the organization as its owner sees it, newest first, heartbeat aside."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = org.owner(EVENTS, {"first": 200, "after": after})["events"]
        items += page["items"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return [e for e in items if not heartbeat_noise(e)]


def org_state(org: Org, database_url: str) -> dict[str, Any]:
    """Events, nodes with their specs and histories, and the database's row counts."""
    nodes = org.owner(NODES_STATE)["nodes"]
    assert nodes["pageInfo"]["hasNextPage"] is False
    return {
        "events": all_events(org),
        "nodes": nodes["items"],
        "revisions": {
            n["id"]: org.owner(REVISIONS, {"id": n["id"]})["nodeRevisions"] for n in nodes["items"]
        },
        "rows": org_row_counts(database_url, org.id),
    }
