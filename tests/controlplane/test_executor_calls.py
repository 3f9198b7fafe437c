"""The executors' direct path (controlplane/api/executor_calls.py) answers exactly as GraphQL.

Each sync and each spec poll is sent twice against a real server: once with the executors' own
document (`SYNC_EXECUTOR`, `POLL_SPECS`, which the direct path recognizes) and once with the same
document plus a trailing space (which it does not, so graphql-core executes it). Status, headers
and body bytes must be equal whatever the call says: steady, changed, refused, unauthenticated
or malformed. The server's counters show which path answered.
"""

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from nodeplane.protocol import INSTANCE_HEADER, ObservedNodeState, ObservedProcess, ProcessStatus
from nodeplane.protocol.executor_documents import POLL_SPECS, SYNC_EXECUTOR
from tests.conftest import BACKENDS
from tests.support.calls import act, deploy
from tests.support.fleet import CAPABILITIES, FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token, backend_server

pytestmark = pytest.mark.server

METRICS_TOKEN = "metrics-token-steady-0123456789"
# Not the executors' documents, so the direct path does not take them: graphql-core executes them.
GRAPHQL_ONLY = SYNC_EXECUTOR + " "
POLL_GRAPHQL_ONLY = POLL_SPECS + " "
IGNORED_HEADERS = {"date", "server"}


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"steady-path-{request.param}")
    with backend_server(request.param, workdir, {"NODEPLANE_METRICS_TOKEN": METRICS_TOKEN}) as proc:
        yield proc


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

    def send(self, document: str, body_input: Any, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(
            "/graphql",
            json={"query": document, "variables": {"input": body_input}},
            headers=headers,
        )

    def poll(
        self, document: str, variables: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        return self.http.post(
            "/graphql", json={"query": document, "variables": variables}, headers=headers
        )

    def counts(self) -> dict[str, float]:
        """Requests by the path that answered them ("syncExecutor/direct", ...), and syncs by
        outcome ("steady", "kept", "written")."""
        text = self.http.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "nodeplane_executor_calls_total":
                    out[f"{sample.labels['operation']}/{sample.labels['path']}"] = sample.value
                elif sample.name == "nodeplane_syncs_total":
                    out[sample.labels["outcome"]] = sample.value
        return out


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
        "malformed": st.sampled_from(
            [None, None, None, None, "kind", "height", "null", "list", "text"]
        ),
        "graphql_first": st.booleans(),
    }
)


def _authorization(fleet: Fleet, auth: str, personal_key: str) -> dict[str, str]:
    """The executor's key, none, a key that does not exist, or a person's key."""
    if auth == "key":
        return {"authorization": f"Bearer {fleet.key}"}
    if auth == "wrong":
        return {"authorization": "Bearer npx_" + "0" * 40}
    if auth == "personal":
        return {"authorization": f"Bearer {personal_key}"}
    return {}


# Each generated call is sent both ways against one server per backend.
BOTH_WAYS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _request(fleet: Fleet, case: dict[str, Any], personal_key: str) -> tuple[Any, dict[str, str]]:
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
    headers.update(_authorization(fleet, case["auth"], personal_key))
    # Inputs that are not an object at all: graphql-core refuses a null before any resolver runs.
    whole: Any = {"null": None, "list": [body], "text": "sync"}.get(case["malformed"], body)
    return whole, headers


# An instance conflict names when the live instance was last heard from. That time moves when the
# heard-from times held in memory are written (once a second), which can fall between the two
# sends of one case: the same answer, a second apart.
_LIVE_SEEN = re.compile(rb'last synced at [^ ]+ \(\d+ s ago\)|"liveSeenAt":"[^"]*"')


def _shape(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k not in IGNORED_HEADERS and k != "content-length"
    ]
    return response.status_code, headers, _LIVE_SEEN.sub(b"(when)", response.content)


@pytest.fixture(scope="module")
def personal_key(fleet: Fleet) -> str:
    data = fleet.org.owner('mutation { createApiKey(name: "personal", kind: PERSONAL) { secret } }')
    secret: str = data["createApiKey"]["secret"]
    return secret


@BOTH_WAYS
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


def test_executor_calls_are_answered_directly_and_others_handed_on(
    fleet: Fleet, personal_key: str
) -> None:
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
    # The executor's live instance is this one: what follows is the common heartbeat.
    earlier = [{**n, "observed": _observed(1, 39, ProcessStatus.RUNNING)} for n in nodes]
    fleet.send(SYNC_EXECUTOR, {**body, "nodes": earlier}, headers)
    before = fleet.counts()
    changed = fleet.send(SYNC_EXECUTOR, body, headers)
    after_change = fleet.counts()
    # Its metric values alone moved: stored by a batch (services/moved_syncs.py). Its repeats
    # are answered from what that stored, with no read: on PostgreSQL too, where the batch's
    # own notice comes back meanwhile and is no change.
    time.sleep(0.2)
    steady = [fleet.send(SYNC_EXECUTOR, body, headers) for _ in range(3)]
    after_steady = fleet.counts()
    for response in (changed, *steady):
        assert response.json()["data"]["syncExecutor"]["rejected"] == []
        assert response.content == steady[-1].content
    assert after_change["syncExecutor/direct"] == before.get("syncExecutor/direct", 0) + 1
    assert after_change["moved"] == before.get("moved", 0) + 1
    assert after_change["written"] == before.get("written", 0)
    assert after_steady["syncExecutor/direct"] == after_change["syncExecutor/direct"] + 3
    assert after_steady["kept"] == after_change.get("kept", 0) + 3, (
        before,
        after_change,
        after_steady,
    )
    assert after_steady.get("steady", 0) == after_change.get("steady", 0)
    assert after_steady["written"] == after_change["written"]
    kept = after_steady
    # Another instance header, the same bytes: not the look's; decided by the database.
    other = {**headers, INSTANCE_HEADER: str(uuid.UUID(int=21))}
    conflict = fleet.send(SYNC_EXECUTOR, body, other).json()
    assert conflict["errors"][0]["extensions"]["code"] == "executor_instance_conflict"
    assert fleet.counts()["kept"] == kept["kept"]
    after_steady = fleet.counts()
    # The changed observation was written by the direct path.
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
    assert fleet.counts()["syncExecutor/direct"] == after_steady["syncExecutor/direct"] + 1
    extra = fleet.http.post(
        "/graphql",
        json={"query": SYNC_EXECUTOR, "variables": {"input": body}, "extensions": {}},
        headers=headers,
    )
    assert extra.json()["data"]["syncExecutor"]["executor"]["name"] == fleet.name
    assert fleet.counts()["syncExecutor/direct"] == after_steady["syncExecutor/direct"] + 1
    # A poll with the executor's key is answered directly; without a key, or with a person's
    # key, the GraphQL path answers (and refuses) it.
    poll = {"known": [], "wait": 0}
    polled = fleet.poll(POLL_SPECS, poll, headers)
    assert sorted(s["nodeId"] for s in polled.json()["data"]["executorSpecs"]) == sorted(
        fleet.node_ids
    )
    counts = fleet.counts()
    assert counts["executorSpecs/direct"] >= 1
    for other in ({}, {"authorization": f"Bearer {personal_key}"}):
        refused = fleet.poll(POLL_SPECS, poll, other).json()
        assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] in (
            "unauthenticated",
            "forbidden",
        )
    after = fleet.counts()
    assert after["executorSpecs/graphql"] == counts.get("executorSpecs/graphql", 0) + 2
    assert after["executorSpecs/direct"] == counts["executorSpecs/direct"]


# What a spec poll may carry: what the executor holds (nothing, its nodes at some revision, a
# node it does not have, garbage), how long to wait (numbers the direct path takes, and those it
# hands on), and the headers of `sync_case`.
known_item = st.one_of(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans()).map(lambda t: ("node", *t)),
    st.just(("stranger", 0, 1, False)),
    st.sampled_from([("garbage", 0, 0, False), ("negative", 0, 0, False)]),
)
poll_case = st.fixed_dictionaries(
    {
        "known": st.one_of(st.none(), st.just("not-a-list"), st.lists(known_item, max_size=4)),
        "wait": st.sampled_from([0, 0.0, 0.001, -1, False, "0", 2**60]),
        "instance": st.sampled_from(["header", "header", "none", "garbage", "other"]),
        "auth": st.sampled_from(["key", "key", "key", "none", "wrong", "personal"]),
        "graphql_first": st.booleans(),
    }
)


def _poll_request(
    fleet: Fleet, case: dict[str, Any], personal_key: str
) -> tuple[dict[str, Any], dict[str, str]]:
    known: Any = case["known"]
    if isinstance(known, list):
        items: list[Any] = []
        for kind, index, revision, deleted in known:
            if kind == "node":
                items.append(
                    {"nodeId": fleet.node_ids[index], "revision": revision, "deleted": deleted}
                )
            elif kind == "stranger":
                items.append({"nodeId": str(uuid.UUID(int=11)), "revision": revision})
            elif kind == "garbage":
                items.append({"nodeId": "nope"})
            else:
                items.append({"nodeId": fleet.node_ids[0], "revision": -1})
        known = items
    variables: dict[str, Any] = {"wait": case["wait"]}
    if known is not None:
        variables["known"] = known
    headers: dict[str, str] = {}
    if case["instance"] == "header":
        headers[INSTANCE_HEADER] = str(fleet.instance)
    elif case["instance"] == "garbage":
        headers[INSTANCE_HEADER] = "not-a-uuid"
    elif case["instance"] == "other":
        # Another process of the same executor, while the live one is heard from: refused.
        headers[INSTANCE_HEADER] = str(uuid.UUID(int=13))
    headers.update(_authorization(fleet, case["auth"], personal_key))
    return variables, headers


@BOTH_WAYS
@given(case=poll_case)
def test_each_spec_poll_gets_the_same_bytes_from_either_path(
    fleet: Fleet, personal_key: str, case: dict[str, Any]
) -> None:
    variables, headers = _poll_request(fleet, case, personal_key)
    documents = [POLL_GRAPHQL_ONLY, POLL_SPECS]
    if not case["graphql_first"]:
        documents.reverse()
    first, second = (fleet.poll(d, variables, headers) for d in documents)
    assert _shape(first) == _shape(second), (case, first.text, second.text)


def test_a_held_poll_on_the_direct_path_returns_the_change_it_waited_for(fleet: Fleet) -> None:
    headers = {"authorization": f"Bearer {fleet.key}", INSTANCE_HEADER: str(fleet.instance)}
    current = fleet.poll(POLL_SPECS, {"wait": 0}, headers).json()["data"]["executorSpecs"]
    known = [{"nodeId": s["nodeId"], "revision": s["revision"]} for s in current]
    assert fleet.poll(POLL_SPECS, {"known": known, "wait": 0}, headers).json() == {
        "data": {"executorSpecs": []}
    }
    target = fleet.node_ids[1]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(fleet.poll, POLL_SPECS, {"known": known, "wait": 20}, headers)
        time.sleep(0.5)
        assert not held.done()
        act(fleet.org.owner, target, "STOP")
        answer = held.result(timeout=10).json()["data"]["executorSpecs"]
    assert [s["nodeId"] for s in answer] == [target]
    assert answer[0]["spec"]["desiredState"] == "stopped"
    assert set(answer[0]) == {"nodeId", "name", "revision", "spec", "deleted", "retainData"}


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


def test_a_sync_is_decided_by_what_is_stored_whatever_this_process_saw_last(
    fleet: Fleet,
) -> None:
    """The direct path skips the steady read for a sync whose bytes differ from the executor's
    last one it answered; a sync that repeats that one is answered from what the last one kept,
    or, when a change made that stale, asked about first. Either way what is stored decides:
    here another path writes in between."""
    headers = {"authorization": f"Bearer {fleet.key}", INSTANCE_HEADER: str(fleet.instance)}
    node_id = fleet.node_ids[0]

    def body(height: int, status: ProcessStatus) -> dict[str, Any]:
        return {
            "name": fleet.name,
            "kind": "agent",
            "version": "0.1.0-test",
            "capabilities": CAPABILITIES.to_wire(),
            "nodes": [{"nodeId": node_id, "observed": _observed(1, height, status)}],
        }

    def stored_height() -> int:
        observed = fleet.org.owner(
            "query($id: UUID!) { node(id: $id) { observed } }", {"id": node_id}
        )["node"]["observed"]
        height: int = observed["processes"][0]["height"]
        return height

    def step(
        document: str, height: int, status: ProcessStatus = ProcessStatus.RUNNING
    ) -> tuple[float, float, float, float]:
        before = fleet.counts()
        answer = fleet.send(document, body(height, status), headers).json()
        assert answer["data"]["syncExecutor"]["rejected"] == [], answer
        assert stored_height() == height
        after = fleet.counts()
        return cast(
            tuple[float, float, float, float],
            tuple(
                after.get(outcome, 0) - before.get(outcome, 0)
                for outcome in ("steady", "kept", "moved", "written")
            ),
        )

    step(SYNC_EXECUTOR, 101)
    assert step(SYNC_EXECUTOR, 101) == (0, 1, 0, 0)  # answered from what the last one stored
    # Another path stores 102: the direct path's last sync (101) is no longer what is stored.
    assert step(GRAPHQL_ONLY, 102) == (0, 0, 0, 1)
    # The same bytes as its last: asked, not steady, and written.
    assert step(SYNC_EXECUTOR, 101) == (0, 0, 0, 1)
    assert step(SYNC_EXECUTOR, 101) == (0, 1, 0, 0)
    # Other bytes, whose metric values alone moved: stored with a batch, without asking.
    assert step(SYNC_EXECUTOR, 103) == (0, 0, 1, 0)
    assert step(SYNC_EXECUTOR, 103) == (0, 1, 0, 0)
    # Other bytes that say more (a status): handed back by the batch, and written.
    assert step(SYNC_EXECUTOR, 104, ProcessStatus.STOPPED) == (0, 0, 0, 1)
    assert step(SYNC_EXECUTOR, 104) == (0, 0, 0, 1)
    assert step(SYNC_EXECUTOR, 104) == (0, 1, 0, 0)
