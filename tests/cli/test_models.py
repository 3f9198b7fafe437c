"""The CLI's models (cli/models.py, pydantic, built on first use): read from the API's JSON,
printed by `--output json` as scripts read them, and an answer of the wrong shape is a typed
failure of the client (ConnectionFailed: exit 3) saying what did not fit, not a traceback."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from nodeplane.cli.client import NodeplaneClient
from nodeplane.cli.errors import ConnectionFailed
from nodeplane.cli.models import Incident, Node, Page
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
    assert node == Node.model_validate(node_answer())
    with pytest.raises(ValidationError, match="frozen"):
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
    node = Node.model_validate(answer)
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
    incident = Incident.model_validate(answer)
    assert incident.value == 91.0 and isinstance(incident.value, float)
    assert incident.rule == "disk_usage" and incident.state == "open"
    assert incident.to_json()["value"] == 91.0


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (None, "the answer: Input should be a valid dictionary or instance of Node, got None"),
        (node_answer(phase="BOGUS"), "phase: Input should be 'deleting', 'provisioning',"),
        (node_answer(revision="three"), "revision: Input should be a valid integer"),
        (node_answer(revision=3.5), "revision: Input should be a valid integer"),
        (node_answer(stale="maybe"), "stale: Input should be a valid boolean"),
        (node_answer(id="ltc-1"), "id: Input should be a valid UUID"),
        (node_answer(createdAt="yesterday"), "createdAt: Input should be a valid datetime"),
        (node_answer(spec=[]), "spec: Input should be a valid dictionary, got []"),
        (node_answer(name=None), "name: Input should be a valid string, got None"),
        ({k: v for k, v in node_answer().items() if k != "chain"}, "chain: missing"),
        (
            node_answer(executor={"id": EXECUTOR_ID, "name": 7, "status": "ONLINE"}),
            "executor.name: Input should be a valid string, got 7",
        ),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_typed_failure(answer: Any, problem: str) -> None:
    # A server of another version: a failure of the control plane's answer (exit 3) that names
    # the field as the API spells it, not pydantic's traceback.
    with pytest.raises(ConnectionFailed) as failed:
        NodeplaneClient._parse(Node, answer)
    assert str(failed.value).startswith(
        f"unexpected answer from the control plane (Node): {problem}"
    )
    assert "errors.pydantic.dev" not in str(failed.value)


def test_a_page_says_which_item_did_not_fit() -> None:
    info = {"endCursor": "c2", "hasNextPage": True}
    page = NodeplaneClient._page(Node, {"items": [node_answer(), node_answer()], "pageInfo": info})
    assert isinstance(page, Page) and [n.name for n in page.items] == ["ltc-1", "ltc-1"]
    assert all(isinstance(n, Node) for n in page.items)
    assert page.end_cursor == "c2" and page.has_next_page is True

    prefix = r"^unexpected answer from the control plane \(Node page\): "
    bad = {"items": [node_answer(), node_answer(phase=None)], "pageInfo": info}
    with pytest.raises(ConnectionFailed, match=prefix + r"items\[1\]\.phase: .*, got None$"):
        NodeplaneClient._page(Node, bad)
    with pytest.raises(ConnectionFailed, match=prefix + r"pageInfo\.hasNextPage: missing$"):
        NodeplaneClient._page(Node, {"items": [], "pageInfo": {"endCursor": None}})
    with pytest.raises(ConnectionFailed, match=prefix + r"items: Input should be a valid list"):
        NodeplaneClient._page(Node, {"items": None, "pageInfo": info})


def test_a_list_of_the_wrong_shape_is_a_typed_failure() -> None:
    nodes = NodeplaneClient._parse_all(Node, [node_answer(), node_answer(name="ltc-2")])
    assert [n.name for n in nodes] == ["ltc-1", "ltc-2"]

    prefix = r"^unexpected answer from the control plane \(Node list\): "
    with pytest.raises(
        ConnectionFailed, match=prefix + r"the answer: Input should be a valid list"
    ):
        NodeplaneClient._parse_all(Node, {"items": []})
    with pytest.raises(ConnectionFailed, match=prefix + r"\[1\]: Input should be a valid dict"):
        NodeplaneClient._parse_all(Node, [node_answer(), 3])


def test_many_problems_are_summed_up() -> None:
    # Another version's answer breaks the same field in every item: the first few say enough.
    answer = {"items": [node_answer(phase="NEW")] * 200, "pageInfo": {"endCursor": None}}
    with pytest.raises(ConnectionFailed) as failed:
        NodeplaneClient._page(Node, answer)
    message = str(failed.value)
    assert message.count("phase: Input should be") == 3 and "items[2].phase" in message
    assert message.endswith("; and 198 more")  # 197 more phases and pageInfo.hasNextPage
