"""The steady-heartbeat path (controlplane/api/steady_sync.py) answers exactly as the GraphQL path.

Each sync is sent twice against a real server: once with the executors' own document
(`SYNC_EXECUTOR`, which the steady path recognizes) and once with the same document plus a
trailing space (which it does not, so graphql-core executes it). Status, headers and body bytes
must be equal whatever the sync says: steady, changed, refused, unauthenticated or malformed.
The server's counter shows the steady path did answer the steady ones and handed the rest on.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from nodeplane.protocol import INSTANCE_HEADER, ObservedNodeState, ObservedProcess, ProcessStatus
from nodeplane.protocol.executor_documents import SYNC_EXECUTOR
from tests.conftest import BACKENDS, new_database_url
from tests.support.calls import deploy
from tests.support.fleet import CAPABILITIES, FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token

pytestmark = pytest.mark.server

METRICS_TOKEN = "metrics-token-steady-0123456789"
# Not the executors' document, so the steady path hands it on: graphql-core executes it.
GRAPHQL_ONLY = SYNC_EXECUTOR + " "
IGNORED_HEADERS = {"date", "server"}


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    backend: str = request.param
    workdir: Path = tmp_path_factory.mktemp(f"steady-path-{backend}")
    proc = ServerProcess(
        database_url=new_database_url(backend, workdir),
        workdir=workdir / "server",
        extra_env={"NODEPLANE_METRICS_TOKEN": METRICS_TOKEN},
    )
    proc.start()
    yield proc
    proc.stop()


class Fleet:
    """One executor with three nodes, and raw HTTP to send its syncs either way."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.org: Org = make_org(server.url, Client(server.url, admin_token(server.url)))
        self.key = self.org.executor_key()
        self.instance = uuid.uuid4()
        agent = FakeExecutor(server.url, self.key, instance_id=self.instance)
        agent.sync()
        self.name = agent.name
        self.node_ids = [deploy(self.org.owner, agent, f"n{i}")["id"] for i in range(3)]
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def send(
        self, document: str, body_input: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        return self.http.post(
            "/graphql",
            json={"query": document, "variables": {"input": body_input}},
            headers=headers,
        )

    def counts(self) -> dict[str, float]:
        text = self.http.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text
        return {
            s.labels["outcome"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "nodeplane_steady_syncs_total"
        }


@pytest.fixture(scope="module")
def fleet(server: ServerProcess) -> Iterator[Fleet]:
    f = Fleet(server)
    yield f
    f.http.close()


def _observed(revision: int, height: int, status: ProcessStatus) -> dict[str, Any]:
    return ObservedNodeState(
        revision=revision,
        processes=[ObservedProcess(role="node", status=status, height=height)],
    ).to_wire()


# What one node's observation in a sync may be: small ranges, so a repeat (steady) is common.
observation = st.tuples(
    st.integers(0, 2),  # index of the node; 2 is sometimes replaced by an unknown node
    st.sampled_from([1, 1, 1, 2]),  # revision: 2 is newer than the spec's 1 and is refused
    st.sampled_from([5, 5, 6]),
    st.sampled_from([ProcessStatus.RUNNING, ProcessStatus.RUNNING, ProcessStatus.STOPPED]),
)
sync_case = st.fixed_dictionaries(
    {
        "observations": st.lists(observation, max_size=4),
        "unknown_node": st.booleans(),
        "instance": st.sampled_from(["header", "header", "input", "both", "mismatch", "garbage"]),
        "auth": st.sampled_from(["key", "key", "key", "none", "wrong", "personal"]),
        "version": st.sampled_from(["0.1.0-test", "0.1.0-test", "0.2.0-test"]),
        "name": st.sampled_from(["self", "self", "self", "other"]),
        "malformed": st.sampled_from([None, None, None, None, "kind", "height"]),
        "graphql_first": st.booleans(),
    }
)


def _request(
    fleet: Fleet, case: dict[str, Any], personal_key: str
) -> tuple[dict[str, Any], dict[str, str]]:
    nodes = []
    for index, revision, height, status in case["observations"]:
        node_id = fleet.node_ids[index]
        if index == 2 and case["unknown_node"]:
            node_id = str(uuid.UUID(int=7))
        nodes.append({"nodeId": node_id, "observed": _observed(revision, height, status)})
    body: dict[str, Any] = {
        "name": fleet.name if case["name"] == "self" else "someone-else",
        "kind": "agent",
        "version": case["version"],
        "capabilities": CAPABILITIES.to_wire(),
        "nodes": nodes,
    }
    if case["malformed"] == "kind":
        body["kind"] = "toaster"
    elif case["malformed"] == "height" and nodes:
        nodes[0]["observed"]["processes"][0]["height"] = -3
    headers: dict[str, str] = {}
    instance = case["instance"]
    if instance in ("header", "both", "mismatch"):
        headers[INSTANCE_HEADER] = str(fleet.instance)
    if instance in ("input", "both"):
        body["instanceId"] = str(fleet.instance)
    if instance == "mismatch":
        body["instanceId"] = str(uuid.UUID(int=9))
    if instance == "garbage":
        headers[INSTANCE_HEADER] = "not-a-uuid"
    auth = case["auth"]
    if auth == "key":
        headers["authorization"] = f"Bearer {fleet.key}"
    elif auth == "wrong":
        headers["authorization"] = "Bearer npx_" + "0" * 40
    elif auth == "personal":
        headers["authorization"] = f"Bearer {personal_key}"
    return body, headers


def _shape(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in IGNORED_HEADERS]
    return response.status_code, headers, response.content


@pytest.fixture(scope="module")
def personal_key(fleet: Fleet) -> str:
    data = fleet.org.owner('mutation { createApiKey(name: "personal", kind: PERSONAL) { secret } }')
    secret: str = data["createApiKey"]["secret"]
    return secret


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=sync_case)
def test_each_sync_gets_the_same_bytes_from_either_path(
    fleet: Fleet, personal_key: str, case: dict[str, Any]
) -> None:
    body, headers = _request(fleet, case, personal_key)
    documents = [GRAPHQL_ONLY, SYNC_EXECUTOR]
    if not case["graphql_first"]:
        documents.reverse()
    first, second = (fleet.send(d, body, headers) for d in documents)
    # A sync that changed something is written by whichever went first; the second then
    # repeats it, and the answer names the same executor and the same refusals either way.
    assert _shape(first) == _shape(second), (case, first.text, second.text)


def test_the_steady_path_answers_steady_syncs_and_hands_on_the_rest(fleet: Fleet) -> None:
    headers = {"authorization": f"Bearer {fleet.key}", INSTANCE_HEADER: str(fleet.instance)}
    nodes = [
        {"nodeId": nid, "observed": _observed(1, 40, ProcessStatus.RUNNING)}
        for nid in fleet.node_ids
    ]
    body = {
        "name": fleet.name,
        "kind": "agent",
        "version": "0.1.0-test",
        "capabilities": CAPABILITIES.to_wire(),
        "nodes": nodes,
    }
    before = fleet.counts()
    changed = fleet.send(SYNC_EXECUTOR, body, headers)
    after_change = fleet.counts()
    steady = [fleet.send(SYNC_EXECUTOR, body, headers) for _ in range(3)]
    after_steady = fleet.counts()
    for response in (changed, *steady):
        assert response.json()["data"]["syncExecutor"]["rejected"] == []
    assert after_change.get("handed_on", 0) == before.get("handed_on", 0) + 1
    assert after_change.get("answered", 0) == before.get("answered", 0)
    assert after_steady["answered"] == after_change.get("answered", 0) + 3
    assert after_steady["handed_on"] == after_change["handed_on"]
    # The changed observation was written by the GraphQL path, which the steady path handed it to.
    observed = fleet.org.owner(
        "query($id: UUID!) { node(id: $id) { observed } }", {"id": fleet.node_ids[0]}
    )["node"]["observed"]
    assert observed["processes"][0]["height"] == 40
    # operationName "Sync" is the same document; an extra body key is not.
    named = fleet.http.post(
        "/graphql",
        json={"query": SYNC_EXECUTOR, "variables": {"input": body}, "operationName": "Sync"},
        headers=headers,
    )
    assert named.json()["data"]["syncExecutor"]["executor"]["name"] == fleet.name
    assert fleet.counts()["answered"] == after_steady["answered"] + 1


def test_a_revoked_key_is_refused_on_the_steady_path_at_once(server: ServerProcess) -> None:
    """The steady path authenticates from the key cache: a revocation must empty it before the
    revoking call returns (store/key_cache.py), or a revoked agent would go on heartbeating."""
    f = Fleet(server)
    try:
        headers = {"authorization": f"Bearer {f.key}", INSTANCE_HEADER: str(f.instance)}
        body = {
            "name": f.name,
            "kind": "agent",
            "version": "0.1.0-test",
            "capabilities": CAPABILITIES.to_wire(),
            "nodes": [],
        }
        for _ in range(2):
            assert f.send(SYNC_EXECUTOR, body, headers).json()["data"]["syncExecutor"]
        keys = f.org.owner("query { apiKeys { id kind } }")["apiKeys"]
        for key in keys:
            if key["kind"] == "EXECUTOR":
                f.org.owner(
                    "mutation($id: UUID!) { revokeApiKey(id: $id) { id } }", {"id": key["id"]}
                )
        refused = f.send(SYNC_EXECUTOR, body, headers).json()
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "unauthenticated"
    finally:
        f.http.close()
