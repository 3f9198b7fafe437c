"""Input bounds against a real server on SQLite and PostgreSQL (issue 7, findings 2's root cause,
8, 10 and 11): runtime events in the executor's own namespace with the server's time, finite
numbers and in-range datetimes only, capability strings that are names, sane spec bounds, config
values and file paths the executor can accept — each refusal typed and writing nothing."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from graphql import GraphQLInputObjectType, GraphQLList, GraphQLNonNull, GraphQLScalarType

from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.controlplane.api.context import SESSION_COOKIE
from nodeplane.controlplane.api.schema import schema
from nodeplane.protocol import ExecutorCapabilities
from tests.support.calls import all_events, deploy
from tests.support.fleet import CREATE_NODE, LITECOIN_SPEC, FakeExecutor, Org
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess
from tests.support.state import org_state

REPORT = "mutation($events: JSON!) { reportRuntimeEvents(events: $events) }"
SYNC = "mutation($input: JSON!) { syncExecutor(input: $input) { executor { id } } }"
CREATE_KEY = (
    'mutation($x: DateTime) { createApiKey(name: "k", kind: PERSONAL, expiresAt: $x) { secret } }'
)
UPDATE_NODE = "mutation($input: UpdateNodeInput!) { updateNode(input: $input) { id revision } }"
EXECUTORS = "{ executors { id name capabilities resources } }"
NODE_OBSERVED = "query($id: UUID!) { node(id: $id) { observed } }"

# What the real litecoin adapter declares, with the version the test specs name.
LITECOIN_CAPABILITIES = ExecutorCapabilities(
    chains=[LITECOIN.capability({"litecoind": ["0.21.4"]})]
)


class Refusals:
    """Calls that must be refused with a typed error, proving the organization is unchanged."""

    def __init__(self, org: Org, server: ServerProcess) -> None:
        self.org, self.server = org, server
        self.before = org_state(org, server.database_url)

    def unchanged(self, case: object) -> None:
        assert org_state(self.org, self.server.database_url) == self.before, f"{case!r} wrote"

    def error(
        self, case: object, client: Client, query: str, variables: dict[str, Any] | None = None
    ) -> GraphQLError:
        with pytest.raises(GraphQLError) as err:
            client(query, variables)
        self.unchanged(case)
        assert err.value.code != "internal", (case, err.value.errors)
        return err.value


@pytest.fixture
def node_id(org: Org, executor: FakeExecutor) -> str:
    return str(deploy(org.owner, executor, "ltc-events")["id"])


def event(
    node: str | None, event_type: str = "node.process.crashed", **extra: Any
) -> dict[str, Any]:
    return {"nodeId": node, "type": event_type, "level": "error", "message": "m", **extra}


# ---- finding 10: the executor's own namespace, the server's time ---------------------------

CONTROL_PLANE_TYPES = [
    "node.lifecycle.transition",
    "node.removed",
    "node.created",
    "node.deleted",
    "node.updated",
    "apikey.revoked",
    "apikey.created",
    "member.removed",
    "executor.connected",
    "executor.disconnected",
    "executor.reconnected",
    "executor.rebound",
]


def test_executors_cannot_record_control_plane_event_types(
    org: Org, executor: FakeExecutor, node_id: str, server: ServerProcess
) -> None:
    as_executor = org.owner.as_(executor.api_key)
    refusals = Refusals(org, server)
    for forged in CONTROL_PLANE_TYPES:
        batch = [event(node_id), event(node_id, forged)]
        err = refusals.error(forged, as_executor, REPORT, {"events": batch})
        assert err.code == "invalid_input", forged
        assert repr(forged) in err.errors[0]["message"], err.errors[0]["message"]
        assert err.extensions["field"] == "events[1]"
    # The good half alone is taken.
    assert as_executor(REPORT, {"events": [event(node_id)]})["reportRuntimeEvents"] == 1


def test_older_agents_event_names_are_mapped_into_the_namespace(
    org: Org, executor: FakeExecutor, node_id: str
) -> None:
    as_executor = org.owner.as_(executor.api_key)
    legacy = [event(node_id, "process.crashed"), event(node_id, "process.restarted")]
    assert as_executor(REPORT, {"events": legacy})["reportRuntimeEvents"] == 2
    types = [e["type"] for e in all_events(org.owner, nodeId=node_id) if e["source"] == "runtime"]
    assert types == ["node.process.restarted", "node.process.crashed"]


def test_a_claimed_time_is_kept_in_the_payload_not_as_the_events_time(
    org: Org, executor: FakeExecutor, node_id: str
) -> None:
    as_executor = org.owner.as_(executor.api_key)
    claims = ["1970-01-01T00:00:00Z", "2999-12-31T23:00:00+05:00"]
    started = datetime.now(UTC)
    batch = [
        event(node_id, "node.sync.error", occurredAt=c, payload={"n": i})
        for i, c in enumerate(claims)
    ]
    assert as_executor(REPORT, {"events": batch})["reportRuntimeEvents"] == 2
    finished = datetime.now(UTC)
    got = sorted(
        (e for e in all_events(org.owner, nodeId=node_id) if e["type"] == "node.sync.error"),
        key=lambda e: e["payload"]["n"],
    )
    assert [e["payload"]["occurredAt"] for e in got] == [
        "1970-01-01T00:00:00+00:00",
        "2999-12-31T18:00:00+00:00",
    ]
    for e in got:
        created = datetime.fromisoformat(e["createdAt"])
        assert started.replace(microsecond=0) <= created <= finished, e["createdAt"]


# ---- finding 8: finite numbers, in-range datetimes -----------------------------------------


def strict_json(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_in_payloads_are_refused(
    org: Org, executor: FakeExecutor, node_id: str, server: ServerProcess
) -> None:
    as_executor = org.owner.as_(executor.api_key)
    refusals = Refusals(org, server)
    # In the document itself, where graphql-core reads 1e400 as a float (inf).
    for literal in ("1e400", "-1e400", "99999999999999999999999999"):
        document = (
            "mutation { reportRuntimeEvents(events: [{nodeId: "
            f'"{node_id}", type: "node.sync.error", message: "m", payload: {{x: {literal}}}}}]) }}'
        )
        err = refusals.error(literal, as_executor, document)
        assert err.code == "invalid_input", literal
    # In JSON variables, which Python's json module reads leniently.
    for token in ("NaN", "Infinity", "-Infinity", "1e400"):
        body = (
            '{"query": "mutation($e: JSON!) { reportRuntimeEvents(events: $e) }", "variables": '
            f'{{"e": [{{"nodeId": "{node_id}", "type": "node.sync.error", "message": "m", '
            f'"payload": {{"x": {token}}}}}]}}}}'
        )
        response = httpx.post(
            f"{server.url}/graphql",
            content=body.encode(),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {executor.api_key}",
            },
            timeout=30,
        )
        assert response.status_code < 500, token
        errors = strict_json(response.text)["errors"]
        assert errors[0]["extensions"]["code"] in ("invalid_input", "bad_request"), token
        refusals.unchanged(token)
    # Whatever was accepted reads back as strict JSON.
    response = org.owner.raw("{ events(first: 200) { items { payload } } }")
    assert response.status_code == 200
    strict_json(response.text)


BAD_TIMES = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T00:00:00Z",
    "1969-12-31T23:59:59Z",
]


def test_out_of_range_datetimes_are_invalid_input(
    org: Org, executor: FakeExecutor, node_id: str, server: ServerProcess
) -> None:
    as_executor = org.owner.as_(executor.api_key)
    refusals = Refusals(org, server)
    for value in [*BAD_TIMES, "2030-01-01T00:00:00"]:
        err = refusals.error(
            value, as_executor, REPORT, {"events": [event(node_id, occurredAt=value)]}
        )
        assert err.code == "invalid_input", value
        err = refusals.error(value, org.owner, CREATE_KEY, {"x": value})
        assert (err.code, err.extensions.get("field")) == ("invalid_input", "expiresAt"), value
        literal = CREATE_KEY.replace("$x", f'"{value}"').replace(
            "mutation($x: DateTime) ", "mutation "
        )
        err = refusals.error(value, org.owner, literal)
        assert err.code in ("invalid_input", "bad_request"), value
    # In range, both are fine.
    as_executor(REPORT, {"events": [event(node_id, occurredAt="2999-01-01T00:00:00-05:00")]})
    org.owner(CREATE_KEY, {"x": "2999-01-01T00:00:00-05:00"})


def _named(type_: Any) -> Any:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


def datetime_arguments() -> set[str]:
    """Every DateTime a mutation takes, as `mutation.argument[.field...]`."""
    found: set[str] = set()
    mutation = schema._schema.mutation_type
    assert mutation is not None

    def walk(type_: Any, path: str, seen: frozenset[str]) -> None:
        named = _named(type_)
        if isinstance(named, GraphQLScalarType) and named.name == "DateTime":
            found.add(path)
        elif isinstance(named, GraphQLInputObjectType) and named.name not in seen:
            for name, field in named.fields.items():
                walk(field.type, f"{path}.{name}", seen | {named.name})

    for field_name, field in mutation.fields.items():
        for arg_name, arg in field.args.items():
            walk(arg.type, f"{field_name}.{arg_name}", frozenset())
    return found


def test_every_datetime_argument_of_a_mutation_is_range_checked() -> None:
    # Each one must go through api.validation.datetime_input and be covered above; a new one
    # fails here until it is.
    assert datetime_arguments() == {"createApiKey.expiresAt"}


# ---- finding 2's root cause: capability strings are names ----------------------------------

XSS = "</script><script>fetch('/graphql')</script>"


def sync_input(name: str, **changes: Any) -> dict[str, Any]:
    base = FakeExecutor("http://unused", "k", name=name)
    wire: dict[str, Any] = {
        "name": base.name,
        "kind": "agent",
        "version": "0.1.0-test",
        "capabilities": base.capabilities.to_wire(),
        "resources": {},
        "nodes": [],
    }
    wire.update(changes)
    return wire


def hostile_capabilities() -> dict[str, dict[str, Any]]:
    good = LITECOIN_CAPABILITIES.to_wire()
    cases: dict[str, dict[str, Any]] = {}

    def variant(label: str, mutate: Any) -> None:
        doc = json.loads(json.dumps(good))
        mutate(doc)
        cases[label] = doc

    chain = lambda d: d["chains"][0]  # noqa: E731
    client = lambda d: d["chains"][0]["roles"][0]["clients"][0]  # noqa: E731
    variant("network", lambda d: chain(d)["networks"].append(XSS))
    variant("chain", lambda d: chain(d).update(chain=XSS))
    variant("role", lambda d: chain(d)["roles"][0].update(role=XSS))
    variant("client", lambda d: client(d).update(name=XSS))
    variant("version", lambda d: client(d)["versions"].append(XSS))
    variant("managed flag", lambda d: client(d)["managedFlags"].append(XSS))
    variant("managed key", lambda d: client(d)["managedConfigKeys"].append(XSS))
    variant("path flag", lambda d: client(d).setdefault("pathFlags", []).append(XSS))
    variant("value rule", lambda d: client(d).setdefault("configValueRules", []).append(XSS))
    variant("storage class", lambda d: d.update(storageClasses=[XSS]))
    variant("resource defaults key", lambda d: chain(d)["resourceDefaults"].update({XSS: {}}))
    variant(
        "resource default value",
        lambda d: chain(d)["resourceDefaults"]["regtest"].update(cpuRequest=XSS),
    )
    variant("too many networks", lambda d: chain(d).update(networks=["n"] * 1000))
    return cases


def test_capability_strings_must_be_names(
    org: Org, executor: FakeExecutor, node_id: str, server: ServerProcess
) -> None:
    as_executor = org.owner.as_(executor.api_key)
    as_newcomer = org.owner.as_(org.executor_key("newcomer"))
    refusals = Refusals(org, server)
    executors_before = org.owner(EXECUTORS)["executors"]
    for label, capabilities in hostile_capabilities().items():
        for name, client in ((executor.name, as_executor), ("newcomer", as_newcomer)):
            payload = sync_input(name, capabilities=capabilities)
            err = refusals.error(label, client, SYNC, {"input": payload})
            assert err.code == "invalid_input", label
            paths = [p["path"] for p in err.extensions["problems"]]
            assert any(
                p.startswith("capabilities.chains") or p.startswith("capabilities.storageClasses")
                for p in paths
            ), (label, paths)
        assert org.owner(EXECUTORS)["executors"] == executors_before, label
    assert XSS not in json.dumps(org.owner(EXECUTORS))
    # The real adapter's capabilities are fine.
    as_executor(
        SYNC, {"input": sync_input(executor.name, capabilities=LITECOIN_CAPABILITIES.to_wire())}
    )


def test_host_resources_and_observed_processes_are_bounded(
    org: Org, executor: FakeExecutor, node_id: str, server: ServerProcess
) -> None:
    refusals = Refusals(org, server)
    as_executor = org.owner.as_(executor.api_key)
    bad_inputs: dict[str, dict[str, Any]] = {
        "negative cores": {"resources": {"cpuCores": -1}},
        "huge memory": {"resources": {"memoryBytes": 2**70}},
        "role markup": {
            "nodes": [
                {
                    "nodeId": node_id,
                    "observed": {"revision": 1, "processes": [{"role": XSS, "status": "running"}]},
                }
            ]
        },
        "height past 64 bits": {
            "nodes": [
                {
                    "nodeId": node_id,
                    "observed": {
                        "revision": 1,
                        "processes": [{"role": "node", "status": "running", "height": 2**64}],
                    },
                }
            ]
        },
        "version markup": {"version": XSS},
    }
    for label, changes in bad_inputs.items():
        err = refusals.error(
            label, as_executor, SYNC, {"input": sync_input(executor.name, **changes)}
        )
        assert err.code == "invalid_input", label
    assert org.owner(NODE_OBSERVED, {"id": node_id})["node"]["observed"] is None


# ---- finding 11: spec bounds, config values, file paths ------------------------------------


@pytest.fixture
def litecoin_host(org: Org, server: ServerProcess) -> FakeExecutor:
    """An executor declaring what the real litecoin adapter declares."""
    host = FakeExecutor(
        server.url, org.executor_key("ltc-host"), capabilities=LITECOIN_CAPABILITIES
    )
    host.sync()
    return host


def spec_with(**changes: Any) -> dict[str, Any]:
    return {**LITECOIN_SPEC, **changes}


BAD_SPECS: dict[str, tuple[dict[str, Any], str | None]] = {
    "5,000-digit memoryLimit": (spec_with(resources={"memoryLimit": "9" * 5000}), None),
    "absurd CPU": (spec_with(resources={"cpuLimit": "1000000"}), None),
    "exabytes of memory": (spec_with(resources={"memoryRequest": "4096Pi"}), None),
    "memory in thousandths": (spec_with(resources={"memoryLimit": "500m"}), None),
    "request above limit": (spec_with(resources={"cpuRequest": "4", "cpuLimit": "1"}), None),
    "storage past an exabyte": (spec_with(storage={"size": "2000Pi"}), None),
    "integer past 64 bits": (spec_with(overrides={"files": {"node": {"dbcache": 2**64}}}), None),
    "'#' in a config value": (
        spec_with(overrides={"files": {"node": {"uacomment": "fast # slow"}}}),
        "files.node.uacomment",
    ),
    "-asmap=/etc/shadow": (
        spec_with(overrides={"args": {"node": ["-asmap=/etc/shadow"]}}),
        "args.node: -asmap=/etc/shadow",
    ),
    "asmap up and out": (
        spec_with(overrides={"args": {"node": ["-asmap=../../x"]}}),
        "args.node: -asmap=../../x",
    ),
    "asmap in the config file": (
        spec_with(overrides={"files": {"node": {"asmap": "/etc/shadow"}}}),
        "files.node.asmap",
    ),
}


def test_specs_out_of_bounds_are_refused_up_front(
    org: Org, litecoin_host: FakeExecutor, server: ServerProcess
) -> None:
    existing = deploy(org.owner, litecoin_host, "ltc-existing")["id"]
    refusals = Refusals(org, server)
    for case, (spec, offender) in BAD_SPECS.items():
        err = refusals.error(
            case,
            org.owner,
            CREATE_NODE,
            {"input": {"executorId": litecoin_host.id, "name": "bounded", "spec": spec}},
        )
        assert err.code == "invalid_node_config", (case, err.errors)
        if offender:
            assert err.extensions["offenders"] == [offender], case
            assert offender in err.errors[0]["message"]
        else:
            assert err.extensions["problems"], case
        change = {
            k: spec[k]
            for k in ("resources", "overrides", "storage")
            if k in spec and k != "storage"
        }
        if change:
            err = refusals.error(
                case, org.owner, UPDATE_NODE, {"input": {"nodeId": existing, **change}}
            )
            assert err.code == "invalid_node_config", case
    # Within bounds, the same shapes deploy.
    fine = spec_with(
        resources={"cpuRequest": "1", "cpuLimit": "2", "memoryLimit": "4Gi"},
        overrides={
            "files": {"node": {"uacomment": "fast"}},
            "args": {"node": ["-asmap=ip_asn.map"]},
        },
    )
    org.owner(
        CREATE_NODE, {"input": {"executorId": litecoin_host.id, "name": "fine", "spec": fine}}
    )


def test_a_revision_cause_fits_its_column(
    org: Org, executor: FakeExecutor, node_id: str, server: ServerProcess
) -> None:
    refusals = Refusals(org, server)
    for cause in ("x" * 201, "two\nlines", "del\x7f"):
        change = {"nodeId": node_id, "resources": {"cpuLimit": "2"}, "cause": cause}
        err = refusals.error(cause[:10], org.owner, UPDATE_NODE, {"input": change})
        assert (err.code, err.extensions.get("field")) in (
            ("invalid_input", "cause"),
            ("bad_request", None),
        )
    change = {"nodeId": node_id, "resources": {"cpuLimit": "2"}, "cause": "x" * 200}
    assert org.owner(UPDATE_NODE, {"input": change})["updateNode"]["revision"] == 2


# ---- finding 8: NUL from the web pages, which call the API in-process -----------------------


def test_nul_in_the_events_page_filter_is_a_typed_refusal(org: Org, server: ServerProcess) -> None:
    assert org.owner.token is not None
    cookies = {SESSION_COOKIE: org.owner.token}
    response = httpx.get(
        f"{server.url}/events", params={"type": "a\x00b"}, cookies=cookies, timeout=30
    )
    # The page checks its parameters before it queries (the service would refuse it too:
    # tests/controlplane/test_filter_text.py).
    assert response.status_code == 400
    assert "must not contain NUL characters" in response.text
    fine = httpx.get(f"{server.url}/events", params={"type": "node.*"}, cookies=cookies, timeout=30)
    assert fine.status_code == 200 and "must not contain" not in fine.text


def test_unknown_node_ids_in_events_are_still_dropped(org: Org, executor: FakeExecutor) -> None:
    as_executor = org.owner.as_(executor.api_key)
    got = as_executor(REPORT, {"events": [event(str(uuid.uuid4()))]})["reportRuntimeEvents"]
    assert got == 0
