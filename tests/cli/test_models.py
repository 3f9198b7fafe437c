"""The CLI's models (cli/models.py, msgspec Structs): read from the API's JSON,
printed by `--output json` as scripts read them, and an answer of the wrong shape is a typed
failure of the client (ConnectionFailed: exit 3) saying what did not fit, not a traceback."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest

from nodeplane.cli.client import NodeplaneClient
from nodeplane.cli.errors import ConnectionFailed
from nodeplane.cli.models import Incident, Me, Node, Page
from nodeplane.protocol import DesiredState, NodePhase

NODE_ID = "2d9b253b-4039-416c-9df4-7421d27fa4d6"
EXECUTOR_ID = "3d9b253b-4039-416c-9df4-7421d27fa4d7"


def node_answer(**changes: Any) -> dict[str, Any]:
    """A node as the GraphQL API answers it: camelCase, enums by name, times in ISO 8601."""
    answer: dict[str, Any] = {
        "id": NODE_ID,
        "name": "ltc-1",
        "chain": "litecoin",
        "network": "regtest",
        "phase": "RUNNING",
        "desiredState": "RUNNING",
        "revision": 3,
        "observedRevision": 2,
        "pendingChange": True,
        "stale": False,
        "spec": {"clients": {"node": {"name": "litecoind", "version": "0.21.4"}}},
        "observed": {"processes": [{"role": "node", "height": 7}]},
        "observedAt": "2026-12-04T19:53:00.5+02:00",
        "deletedAt": None,
        "retainData": False,
        "createdAt": "2026-12-04T17:53:00.123456+00:00",
        "updatedAt": "2026-12-04T17:53:00+00:00",
        "executorId": EXECUTOR_ID,
        "executor": {"id": EXECUTOR_ID, "name": "host-1", "status": "ONLINE"},
        "fieldTheCliDidNotAskFor": 1,
    }
    return answer | changes


def test_a_node_is_read_typed_and_printed_as_json_scripts_read_it() -> None:
    node = NodeplaneClient._parse(Node, node_answer())
    assert node.id == UUID(NODE_ID) and node.executor_id == UUID(EXECUTOR_ID)
    assert node.phase is NodePhase.RUNNING and node.desired_state is DesiredState.RUNNING
    assert node.observed_at == datetime(
        2026, 12, 4, 19, 53, 0, 500000, timezone(timedelta(hours=2))
    )
    assert node.created_at == datetime(2026, 12, 4, 17, 53, 0, 123456, UTC)
    assert node.executor is not None and node.executor.status == "online"
    assert node.executor_name == "host-1"
    assert node == Node.from_api(node_answer())
    with pytest.raises(AttributeError, match="immutable"):
        node.name = "other"  # type: ignore[misc]

    printed = node.to_json()
    assert json.loads(json.dumps(printed)) == printed
    expected = node_answer(
        phase="running",
        desiredState="running",
        observedAt="2026-12-04T19:53:00.500000+02:00",
        createdAt="2026-12-04T17:53:00.123456Z",
        updatedAt="2026-12-04T17:53:00Z",
        executor={"id": EXECUTOR_ID, "name": "host-1", "status": "online"},
    )
    del expected["fieldTheCliDidNotAskFor"]
    assert printed == expected
    assert list(printed) == list(expected)  # the fields in the order they always came


def test_fields_the_api_may_leave_out_take_their_defaults() -> None:
    answer = node_answer()
    for optional in ("observedRevision", "observed", "observedAt", "deletedAt", "retainData"):
        del answer[optional]
    answer["executor"] = None
    node = Node.from_api(answer)
    assert node.observed_revision is None and node.observed is None
    assert node.retain_data is False and node.executor_name == EXECUTOR_ID


def test_numbers_are_read_as_their_fields_say() -> None:
    answer = {
        "id": NODE_ID,
        "rule": "DISK_USAGE",
        "severity": "warning",
        "state": "OPEN",
        "subjectKind": "node",
        "subjectId": NODE_ID,
        "subjectName": "ltc-1",
        "message": "disk 91% full",
        "value": 91,
        "threshold": 90.5,
        "details": {},
        "openedAt": "2026-12-04T17:53:00+00:00",
    }
    incident = Incident.from_api(answer)
    assert incident.value == 91.0 and isinstance(incident.value, float)
    assert incident.rule == "disk_usage" and incident.state == "open"
    assert incident.to_json()["value"] == 91.0


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (None, "the answer: Expected `object`, got `null`"),
        (node_answer(phase="BOGUS"), "the answer: Invalid enum value 'BOGUS' of `phase`"),
        (node_answer(revision="three"), "revision: Expected `int`, got `str`"),
        (node_answer(revision=3.5), "revision: Expected `int`, got `float`"),
        (node_answer(stale="maybe"), "stale: Expected `bool`, got `str`"),
        (node_answer(id="ltc-1"), "id: Invalid UUID"),
        (node_answer(createdAt="yesterday"), "createdAt: Invalid RFC3339 encoded datetime"),
        (node_answer(spec=[]), "spec: Expected `object`, got `array`"),
        (node_answer(name=None), "name: Expected `str`, got `null`"),
        (
            {k: v for k, v in node_answer().items() if k != "chain"},
            "the answer: Object missing required field `chain`",
        ),
        (
            node_answer(executor={"id": EXECUTOR_ID, "name": 7, "status": "ONLINE"}),
            "executor.name: Expected `str`, got `int`",
        ),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_typed_failure(answer: Any, problem: str) -> None:
    # A server of another version: a failure of the control plane's answer (exit 3) that names
    # the field as the API spells it, not msgspec's traceback.
    with pytest.raises(ConnectionFailed) as failed:
        NodeplaneClient._parse(Node, answer)
    assert str(failed.value) == f"unexpected answer from the control plane (Node): {problem}"


def test_a_page_says_which_item_did_not_fit() -> None:
    info = {"endCursor": "c2", "hasNextPage": True}
    page = NodeplaneClient._page(Node, {"items": [node_answer(), node_answer()], "pageInfo": info})
    assert isinstance(page, Page) and [n.name for n in page.items] == ["ltc-1", "ltc-1"]
    assert all(isinstance(n, Node) for n in page.items)
    assert page.end_cursor == "c2" and page.has_next_page is True

    prefix = r"^unexpected answer from the control plane \(Node page\): "
    bad = {"items": [node_answer(), node_answer(phase=None)], "pageInfo": info}
    with pytest.raises(ConnectionFailed, match=prefix + r"items\[1\]\.phase: .*, got `null`$"):
        NodeplaneClient._page(Node, bad)
    unknown = {"items": [node_answer(), node_answer(phase="NEW")], "pageInfo": info}
    with pytest.raises(ConnectionFailed, match=prefix + r"items\[1\]: .* 'NEW' of `phase`$"):
        NodeplaneClient._page(Node, unknown)
    with pytest.raises(ConnectionFailed, match=prefix + r"pageInfo: .* field `hasNextPage`$"):
        NodeplaneClient._page(Node, {"items": [], "pageInfo": {"endCursor": None}})
    with pytest.raises(ConnectionFailed, match=prefix + r"items: Expected `array`, got `null`$"):
        NodeplaneClient._page(Node, {"items": None, "pageInfo": info})


def test_a_list_of_the_wrong_shape_is_a_typed_failure() -> None:
    nodes = NodeplaneClient._parse_all(Node, [node_answer(), node_answer(name="ltc-2")])
    assert [n.name for n in nodes] == ["ltc-1", "ltc-2"]

    prefix = r"^unexpected answer from the control plane \(Node list\): "
    with pytest.raises(ConnectionFailed, match=prefix + r"the answer: Expected `array`, got"):
        NodeplaneClient._parse_all(Node, {"items": []})
    with pytest.raises(ConnectionFailed, match=prefix + r"\[1\]: Expected `object`, got `int`$"):
        NodeplaneClient._parse_all(Node, [node_answer(), 3])


def test_the_first_problem_is_named() -> None:
    # Another version's answer breaks the same field in every item: the first says enough.
    answer = {"items": [node_answer(phase="NEW")] * 200, "pageInfo": {"endCursor": None}}
    with pytest.raises(ConnectionFailed) as failed:
        NodeplaneClient._page(Node, answer)
    assert str(failed.value) == (
        "unexpected answer from the control plane (Node page): "
        "items[0]: Invalid enum value 'NEW' of `phase`"
    )


def test_an_optional_enum_name_is_read_lower_case() -> None:
    org = {"id": NODE_ID, "name": "acme"}
    me = Me.from_api({"email": "a@b.c", "role": "OWNER", "kind": "user", "organization": org})
    assert me.role == "owner" and me.organization is not None
    assert me.to_json()["role"] == "owner"
    executor = Me.from_api({"kind": "executor", "role": None})
    assert executor.role is None and executor.email is None and executor.organization is None
