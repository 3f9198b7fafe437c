"""Bad input over HTTP against a real server, on SQLite and PostgreSQL: every refusal is a typed
error, and a refused request writes nothing (no event, no node, no revision)."""

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from tests.support.fleet import CREATE_NODE, ETHEREUM_SPEC, LITECOIN_SPEC, FakeExecutor, Org
from tests.support.gql import GraphQLError
from tests.support.server import ServerProcess
from tests.support.state import org_state

UPDATE_NODE = "mutation($input: UpdateNodeInput!) { updateNode(input: $input) { id revision } }"
LIFECYCLE = "mutation($id: UUID!, $a: LifecycleAction!) { requestNodeLifecycleAction(nodeId: $id, action: $a) { id } }"
INVITE = "mutation($e: String!) { inviteMember(email: $e, role: MEMBER) { token } }"
CREATE_KEY = "mutation($n: String!) { createApiKey(name: $n, kind: PERSONAL) { secret } }"
MAX_BODY = 1024 * 1024


@pytest.fixture
def existing(org: Org, executor: FakeExecutor) -> str:
    """A node already deployed, so that "nothing written" covers changes to it as well."""
    node_id: str = org.owner(
        CREATE_NODE,
        {"input": {"executorId": executor.id, "name": "existing", "spec": LITECOIN_SPEC}},
    )["createNode"]["id"]
    return node_id


class Refusals:
    """Makes calls that must be refused, proving after each that the organization is unchanged."""

    def __init__(self, org: Org, server: ServerProcess) -> None:
        self.org = org
        self.server = server
        self.before = org_state(org, server.database_url)

    def check_unchanged(self, case: object) -> None:
        after = org_state(self.org, self.server.database_url)
        assert after == self.before, f"{case!r} wrote something"

    def error(self, case: object, call: Callable[[], Any]) -> GraphQLError:
        """The typed error of `call`; fails if it succeeds or writes anything."""
        with pytest.raises(GraphQLError) as err:
            call()
        self.check_unchanged(case)
        return err.value

    def response(self, case: object, response: httpx.Response) -> dict[str, Any]:
        """The JSON error body of an HTTP-level refusal; fails unless it is a 4xx."""
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json"), case
        body: dict[str, Any] = response.json()
        assert body["data"] is None, case
        self.check_unchanged(case)
        return body


@pytest.fixture
def refusals(org: Org, server: ServerProcess, existing: str) -> Refusals:
    return Refusals(org, server)


def create(org: Org, executor: FakeExecutor, name: str, spec: Any) -> Callable[[], Any]:
    return lambda: org.owner(
        CREATE_NODE, {"input": {"executorId": executor.id, "name": name, "spec": spec}}
    )


# ---- names ---------------------------------------------------------------------------------

BAD_NAMES = [
    "../x",
    "a b",
    "A",
    "",
    "a" * 64,
    "-a",
    "a-",
    "a_b",
    "a.b",
    "a/b",
    "..",
    "nöde",
    "a\n",
    " a",
    "$(id)",
    "a;rm -rf",
    "a'b",
]


def test_bad_node_names_are_invalid_input(
    org: Org, executor: FakeExecutor, refusals: Refusals
) -> None:
    for name in BAD_NAMES:
        err = refusals.error(name, create(org, executor, name, LITECOIN_SPEC))
        assert (err.code, err.extensions.get("field")) == ("invalid_input", "name"), name

    # The longest valid name, and digits and dashes inside, are fine.
    for name in ("a" * 63, "0-a-1"):
        assert create(org, executor, name, LITECOIN_SPEC)()["createNode"]["name"] == name


# ---- what the executor can run -------------------------------------------------------------


def test_specs_the_executor_cannot_run_are_refused(
    org: Org, executor: FakeExecutor, refusals: Refusals
) -> None:
    litecoind = LITECOIN_SPEC["clients"]["node"]
    cases: dict[str, dict[str, Any]] = {
        "unknown chain": {**LITECOIN_SPEC, "chain": "bitcoin"},
        "unknown network": {**LITECOIN_SPEC, "network": "goerli"},
        "unknown version": {**LITECOIN_SPEC, "clients": {"node": {**litecoind, "version": "9.9"}}},
        "unknown client": {**LITECOIN_SPEC, "clients": {"node": {**litecoind, "name": "btcd"}}},
        "unknown role": {
            **LITECOIN_SPEC,
            "clients": {"node": litecoind, "miner": {"name": "litecoind", "version": "0.21.4"}},
        },
        "unsupported node type": {**ETHEREUM_SPEC, "nodeType": "archive"},
        "missing required role": {
            **ETHEREUM_SPEC,
            "clients": {"execution": ETHEREUM_SPEC["clients"]["execution"]},
        },
        "network of another chain": {**ETHEREUM_SPEC, "network": "regtest"},
    }
    for case, spec in cases.items():
        err = refusals.error(case, create(org, executor, "unsupported", spec))
        assert err.code == "chain_not_supported_by_executor", case

    # The same shapes with supported values deploy.
    assert create(org, executor, "eth", ETHEREUM_SPEC)()["createNode"]["revision"] == 1


# ---- overrides and malformed specs ---------------------------------------------------------


def with_overrides(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {**base, "overrides": overrides}


MANAGED_OVERRIDES: list[tuple[dict[str, Any], list[str]]] = [
    (with_overrides(LITECOIN_SPEC, args={"node": ["-rpcport=1"]}), ["args.node: -rpcport=1"]),
    (with_overrides(LITECOIN_SPEC, files={"node": {"rpcport": 1}}), ["files.node.rpcport"]),
    (
        with_overrides(
            LITECOIN_SPEC,
            args={"node": ["--datadir=/tmp/x", "-txindex=1", "-conf"]},
            files={"node": {"rpcuser": "u", "dbcache": 100, "rpcpassword": "p"}},
        ),
        [
            "args.node: --datadir=/tmp/x",
            "args.node: -conf",
            "files.node.rpcpassword",
            "files.node.rpcuser",
        ],
    ),
    (
        with_overrides(
            ETHEREUM_SPEC,
            args={
                "execution": ["--authrpc.jwtsecret=/etc/passwd", "--cache=4096"],
                "consensus": ["--datadir=/root"],
            },
        ),
        ["args.consensus: --datadir=/root", "args.execution: --authrpc.jwtsecret=/etc/passwd"],
    ),
]


def test_managed_overrides_are_refused_listing_offenders(
    org: Org, executor: FakeExecutor, existing: str, refusals: Refusals
) -> None:
    for spec, offenders in MANAGED_OVERRIDES:
        err = refusals.error(spec, create(org, executor, "managed", spec))
        assert err.code == "invalid_node_config", spec
        assert sorted(err.extensions["offenders"]) == offenders
        for offender in offenders:
            assert offender in err.errors[0]["message"]

        if spec["chain"] == "litecoin":
            update = {"nodeId": existing, "overrides": spec["overrides"]}
            err = refusals.error(spec, partial(org.owner, UPDATE_NODE, {"input": update}))
            assert err.code == "invalid_node_config"
            assert sorted(err.extensions["offenders"]) == offenders

    # Unmanaged overrides are fine.
    fine = with_overrides(LITECOIN_SPEC, args={"node": ["-txindex=1"]}, files={"node": {"a": 1}})
    assert create(org, executor, "fine", fine)()["createNode"]["revision"] == 1


MALFORMED_SPECS: dict[str, Any] = {
    "unknown field": {**LITECOIN_SPEC, "bogus": 1},
    "unknown nested field": {
        **LITECOIN_SPEC,
        "clients": {"node": {"name": "litecoind", "version": "0.21.4", "image": "evil"}},
    },
    "string for int": {**LITECOIN_SPEC, "restartGeneration": "x"},
    "negative restart generation": {**LITECOIN_SPEC, "restartGeneration": -1},
    "list for map": {**LITECOIN_SPEC, "clients": [{"name": "litecoind", "version": "0.21.4"}]},
    "unknown desired state": {**LITECOIN_SPEC, "desiredState": "paused"},
    "unknown node type": {**LITECOIN_SPEC, "nodeType": "light"},
    "bad quantity": {**LITECOIN_SPEC, "storage": {"size": "lots"}},
    "bad resources": {**LITECOIN_SPEC, "resources": {"cpuLimit": "2; rm -rf /"}},
    "missing chain": {k: v for k, v in LITECOIN_SPEC.items() if k != "chain"},
    "missing clients": {k: v for k, v in LITECOIN_SPEC.items() if k != "clients"},
    "no clients": {**LITECOIN_SPEC, "clients": {}},
    "chain not an identifier": {**LITECOIN_SPEC, "chain": "../etc"},
    "version with a slash": {
        **LITECOIN_SPEC,
        "clients": {"node": {"name": "litecoind", "version": "../../bin/sh"}},
    },
    "string spec": "litecoin",
    "list spec": [LITECOIN_SPEC],
    "number spec": 42,
    "arg not a flag": with_overrides(LITECOIN_SPEC, args={"node": ["rm -rf /"]}),
    "arg with newline": with_overrides(LITECOIN_SPEC, args={"node": ["-a=1\nExecStart=/bin/sh"]}),
    "file value with newline": with_overrides(LITECOIN_SPEC, files={"node": {"a": "1\nrpcport=1"}}),
    "file key with equals": with_overrides(LITECOIN_SPEC, files={"node": {"a=b": "1"}}),
    "file value a map": with_overrides(LITECOIN_SPEC, files={"node": {"a": {"b": 1}}}),
    "overrides for unknown role": with_overrides(LITECOIN_SPEC, args={"miner": ["-x"]}),
    "args not a list": with_overrides(LITECOIN_SPEC, args={"node": "-txindex=1"}),
}


def test_malformed_specs_are_invalid_node_config(
    org: Org, executor: FakeExecutor, refusals: Refusals
) -> None:
    for case, spec in MALFORMED_SPECS.items():
        err = refusals.error(case, create(org, executor, "malformed", spec))
        assert err.code == "invalid_node_config", case
        assert err.extensions["field"] == "spec", case
        assert err.extensions["problems"], case


def test_malformed_updates_are_invalid_node_config(
    org: Org, existing: str, refusals: Refusals
) -> None:
    cases: dict[str, dict[str, Any]] = {
        "unknown override section": {"overrides": {"env": {"node": {"A": "1"}}}},
        "arg not a flag": {"overrides": {"args": {"node": ["x"]}}},
        "overrides not an object": {"overrides": "-rpcport=1"},
        "unknown resource": {"resources": {"gpu": "1"}},
        "bad quantity": {"resources": {"memoryLimit": "1 GB"}},
    }
    for case, change in cases.items():
        update = {"nodeId": existing, **change}
        err = refusals.error(case, partial(org.owner, UPDATE_NODE, {"input": update}))
        assert err.code == "invalid_node_config", case


# ---- duplicates and unknown targets --------------------------------------------------------


def test_duplicate_name_on_one_executor_is_already_exists(
    org: Org, executor: FakeExecutor, server: ServerProcess, refusals: Refusals
) -> None:
    err = refusals.error("duplicate", create(org, executor, "existing", LITECOIN_SPEC))
    assert (err.code, err.extensions.get("field")) == ("already_exists", "name")
    # Even with another spec: the name is taken on this executor.
    err = refusals.error("duplicate eth", create(org, executor, "existing", ETHEREUM_SPEC))
    assert err.code == "already_exists"

    # Another executor of the organization may use the name.
    other = FakeExecutor(server.url, org.executor_key("second"))
    other.sync()
    assert create(org, other, "existing", LITECOIN_SPEC)()["createNode"]["name"] == "existing"


def test_unknown_executor_or_node_is_not_found(
    org: Org, executor: FakeExecutor, refusals: Refusals
) -> None:
    ghost = "00000000-0000-4000-8000-000000000000"
    err = refusals.error(
        "ghost executor",
        lambda: org.owner(
            CREATE_NODE, {"input": {"executorId": ghost, "name": "n", "spec": LITECOIN_SPEC}}
        ),
    )
    assert (err.code, err.extensions.get("field")) == ("not_found", "executorId")
    err = refusals.error(
        "ghost node",
        lambda: org.owner(UPDATE_NODE, {"input": {"nodeId": ghost, "resources": {}}}),
    )
    assert err.code == "not_found"
    err = refusals.error(
        "ghost lifecycle", lambda: org.owner(LIFECYCLE, {"id": ghost, "a": "STOP"})
    )
    assert err.code == "not_found"


# ---- malformed requests --------------------------------------------------------------------


def post(
    server: ServerProcess,
    content: bytes | Iterator[bytes],
    token: str | None,
    content_type: str | None = "application/json",
) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{server.url}/graphql", content=content, headers=headers, timeout=30)


def create_body(executor: FakeExecutor, name: str = "via-raw", **extra: Any) -> dict[str, Any]:
    """A request body that would deploy a node if the server accepted it."""
    return {
        "query": CREATE_NODE,
        "variables": {"input": {"executorId": executor.id, "name": name, "spec": LITECOIN_SPEC}},
        **extra,
    }


def test_malformed_bodies_are_bad_request(
    org: Org, executor: FakeExecutor, server: ServerProcess, refusals: Refusals
) -> None:
    valid = json.dumps(create_body(executor)).encode()
    nested = b'{"query": "{ me { email } }", "variables": {"a": ' + b"[" * 100_000
    nested += b"]" * 100_000 + b"}}"
    create_input = create_body(executor)["variables"]["input"]
    spec_nul = with_overrides(LITECOIN_SPEC, files={"node": {"comment": "a\u0000b"}})
    bodies: dict[str, bytes] = {
        "not JSON": b"{createNode(",
        "truncated JSON": valid[:-5],
        "not UTF-8": b'{"query": "\xff\xfe"}',
        "JSON nested too deep": nested,
        "JSON array (batch)": json.dumps([create_body(executor)]).encode(),
        "JSON string": json.dumps(CREATE_NODE).encode(),
        "JSON without query": json.dumps(
            {"variables": create_body(executor)["variables"]}
        ).encode(),
        "query not a string": json.dumps({"query": {"createNode": True}}).encode(),
        "empty query": json.dumps({**create_body(executor), "query": "  "}).encode(),
        "variables not an object": json.dumps({**create_body(executor), "variables": [1]}).encode(),
        "operationName not a string": json.dumps(create_body(executor, operationName=1)).encode(),
        "NUL in a variable": json.dumps(
            {"query": INVITE, "variables": {"e": "a\u0000b@example.test"}}
        ).encode(),
        "NUL deep in the spec": json.dumps(
            {"query": CREATE_NODE, "variables": {"input": {**create_input, "spec": spec_nul}}}
        ).encode(),
        "unpaired surrogate": json.dumps(
            {"query": CREATE_KEY, "variables": {"n": "key-\ud800"}}
        ).encode(),
        "NUL escape in the query": json.dumps(
            {"query": '{ nodes(filter: {name: "\\u0000"}) { items { id } } }'}
        ).encode(),
        "NUL escape in braces": json.dumps(
            {"query": '{ events(filter: {type: "\\u{0}"}) { items { id } } }'}
        ).encode(),
    }
    for case, body in bodies.items():
        got = refusals.response(case, post(server, body, org.owner.token))
        assert got["errors"][0]["extensions"]["code"] == "bad_request", case

    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
    ):
        response = post(server, valid, org.owner.token, content_type)
        got = refusals.response(content_type, response)
        assert response.status_code == 415
        assert got["errors"][0]["extensions"]["code"] == "bad_request", content_type

    # The same body, well-formed and well-labelled, is accepted: the refusals were about form.
    response = post(server, valid, org.owner.token)
    assert response.status_code == 200 and response.json()["data"]["createNode"]["revision"] == 1


def test_oversized_bodies_are_payload_too_large(
    org: Org, executor: FakeExecutor, server: ServerProcess, refusals: Refusals
) -> None:
    def body_of_size(size: int) -> bytes:
        # The bulk rides in a variable the document does not declare (ignored): documents
        # themselves have a much smaller limit of their own (test_request_limits.py).
        padded = create_body(executor, "big")
        padded["variables"]["padding"] = ""
        base = json.dumps(padded).encode()
        padded["variables"]["padding"] = " " * (size - len(base))
        encoded = json.dumps(padded).encode()
        assert len(encoded) == size
        return encoded

    too_big = body_of_size(MAX_BODY + 1)
    response = post(server, too_big, org.owner.token)
    got = refusals.response("declared length", response)
    assert response.status_code == 413
    assert got["errors"][0]["extensions"]["code"] == "payload_too_large"

    def chunks(data: bytes) -> Iterator[bytes]:
        for at in range(0, len(data), 64 * 1024):
            yield data[at : at + 64 * 1024]

    # Without a Content-Length (chunked), the server counts as it reads.
    response = post(server, chunks(too_big), org.owner.token)
    assert "content-length" not in response.request.headers
    got = refusals.response("chunked", response)
    assert response.status_code == 413
    assert got["errors"][0]["extensions"]["code"] == "payload_too_large"

    huge = b'{"query": "' + b" " * (8 * MAX_BODY) + b'{ me { email } }"}'
    response = post(server, chunks(huge), org.owner.token)
    assert refusals.response("huge chunked", response)["errors"][0]["extensions"]["code"] == (
        "payload_too_large"
    )

    # A body of exactly the limit is served.
    response = post(server, body_of_size(MAX_BODY), org.owner.token)
    assert response.status_code == 200 and response.json()["data"]["createNode"]["name"] == "big"


def test_invalid_graphql_is_bad_request(
    org: Org, executor: FakeExecutor, existing: str, refusals: Refusals
) -> None:
    good_input = {"executorId": executor.id, "name": "gql", "spec": LITECOIN_SPEC}
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "syntax error": (CREATE_NODE.replace("{ id", "{ id {"), {"input": good_input}),
        "unterminated": ("mutation($input: CreateNodeInput!) { createNode(input: $input) {", {}),
        "unknown field": (
            "mutation($input: CreateNodeInput!) { createNode(input: $input) { id secret } }",
            {"input": good_input},
        ),
        "unknown argument": (
            "mutation($input: CreateNodeInput!) { createNode(input: $input, force: true) { id } }",
            {"input": good_input},
        ),
        "unknown mutation": ("mutation { dropDatabase }", {}),
        "missing variable": (CREATE_NODE, {}),
        "missing input field": (
            CREATE_NODE,
            {"input": {k: v for k, v in good_input.items() if k != "name"}},
        ),
        "unknown input field": (CREATE_NODE, {"input": {**good_input, "force": True}}),
        "null spec": (CREATE_NODE, {"input": {**good_input, "spec": None}}),
        "name not a string": (CREATE_NODE, {"input": {**good_input, "name": 7}}),
        "executorId not a UUID": (CREATE_NODE, {"input": {**good_input, "executorId": "x"}}),
        "nodeId not a UUID": (LIFECYCLE, {"id": "../x", "a": "STOP"}),
        "unknown enum value": (LIFECYCLE, {"id": existing, "a": "EXPLODE"}),
        "undefined variable": (
            "mutation { createNode(input: $input) { id } }",
            {"input": good_input},
        ),
        "subscription": ("subscription { nodes { id } }", {}),
        "no selection on object": (
            "mutation($input: CreateNodeInput!) { createNode(input: $input) }",
            {"input": good_input},
        ),
    }
    for case, (query, variables) in cases.items():
        err = refusals.error(case, partial(org.owner, query, variables))
        assert err.code == "bad_request", (case, err)

    assert org.owner(CREATE_NODE, {"input": good_input})["createNode"]["name"] == "gql"


def test_garbage_cursors_give_empty_pages(org: Org, existing: str, refusals: Refusals) -> None:
    events = "query($a: String) { events(after: $a) { items { id } pageInfo { hasNextPage } } }"
    nodes = "query($a: String) { nodes(after: $a) { items { id } pageInfo { hasNextPage } } }"
    assert org.owner(events, {"a": None})["events"]["items"]
    for cursor in ("x", "99999999999999999999999", "-99999999999999999999999", "1e9", "-1"):
        page = org.owner(events, {"a": cursor})["events"]
        assert page == {"items": [], "pageInfo": {"hasNextPage": False}}, cursor
    for cursor in ("x", "existing/not-a-uuid", "/", "existing/"):
        page = org.owner(nodes, {"a": cursor})["nodes"]
        assert page == {"items": [], "pageInfo": {"hasNextPage": False}}, cursor
    refusals.check_unchanged("cursors")
