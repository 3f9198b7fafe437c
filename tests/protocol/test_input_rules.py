"""The input rules shared by the control plane and the executors, as tables: JSON values,
datetimes, quantities and spec bounds, runtime event types, text, and what capabilities may say."""

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nodeplane.protocol import (
    ExecutorCapabilities,
    HostResources,
    JsonLimits,
    NodeSpec,
    ObservedNodeState,
    ObservedProcess,
    RuntimeEvent,
    RuntimeEventType,
    SyncExecutorRequest,
    datetime_problem,
    json_value_problem,
    spec_bound_problems,
    unstorable_text_problem,
)
from nodeplane.protocol.json_values import (
    MAX_JSON_INTEGER,
    PAYLOAD_LIMITS,
    _plain_size_bound,
    _walk_problem,
)
from nodeplane.protocol.quantities import (
    QuantityKind,
    cpu_cores,
    memory_bytes,
    quantity_problem,
    quantity_value,
)
from nodeplane.protocol.text import storable_excerpt

# ---- JSON values ---------------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_JSON: dict[str, tuple[Any, str]] = {
    "NaN": ({"x": math.nan}, "finite"),
    "Infinity": ({"x": math.inf}, "finite"),
    "-Infinity": ([-math.inf], "finite"),
    "1e400 (read as inf)": ({"a": {"b": [float("1e400")]}}, "finite"),
    "integer past 64 bits": ({"x": 2**63}, "integers"),
    "negative integer past 64 bits": ({"x": -(2**63)}, "integers"),
    "NUL in a string": ({"x": "a\x00b"}, "NUL"),
    "NUL in a key": ({"a\x00": 1}, "NUL"),
    "lone surrogate": (["\ud800"], "surrogate"),
    "too deep": (nested(40), "deeper"),
    "non-string key": ({1: 2}, "keys must be strings"),
    "not JSON at all": ({"x": object()}, "not a JSON value"),
    "too many values": (list(range(1_000_001)), "at most 1000000 values"),
}


@pytest.mark.parametrize("case", BAD_JSON)
def test_unstorable_json_is_refused_with_the_reason(case: str) -> None:
    value, reason = BAD_JSON[case]
    problem = json_value_problem(value)
    assert problem is not None and reason in problem, (case, problem)


def test_the_problem_names_where_it_is() -> None:
    assert json_value_problem({"a": {"b": [1, math.nan]}}) == (
        "a.b[1]: numbers must be finite (no NaN or Infinity)"
    )


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        None,
        {"a": [1, 2.5, -3, True, None, "x"], "b": {"c": {"d": "é✓"}}},
        {"big": 2**63 - 1, "small": -(2**63) + 1, "tiny": 5e-324, "max": 1.7976931348623157e308},
        nested(31),
    ],
)
def test_storable_json_passes(value: Any) -> None:
    assert json_value_problem(value) is None


def test_payload_limits_are_tighter() -> None:
    assert json_value_problem({"x": "a" * 5000}) is None
    assert "4096" in (json_value_problem({"x": "a" * 5000}, PAYLOAD_LIMITS) or "")
    assert "deeper" in (json_value_problem(nested(9), PAYLOAD_LIMITS) or "")
    many = {f"k{i}": "v" * 20 for i in range(900)}
    assert "bytes" in (json_value_problem(many, PAYLOAD_LIMITS) or "")
    assert json_value_problem({"k": 1}, JsonLimits(max_values=1)) is not None


# ---- datetimes -----------------------------------------------------------------------------

PLUS5 = timezone(timedelta(hours=5))
MINUS5 = timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=PLUS5),  # converting to UTC overflows
        datetime(9999, 12, 31, 23, tzinfo=MINUS5),  # likewise, the other way
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(3000, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 4, 59, tzinfo=PLUS5),  # 1969-12-31T23:59Z
        datetime(2030, 1, 1),  # no time zone
    ],
)
def test_out_of_range_or_naive_datetimes_are_refused(value: datetime) -> None:
    assert datetime_problem(value) is not None


@pytest.mark.parametrize(
    "value",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 5, tzinfo=PLUS5),
        datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2999, 12, 31, 18, 59, tzinfo=MINUS5),
        datetime.now(UTC),
    ],
)
def test_in_range_datetimes_pass(value: datetime) -> None:
    assert datetime_problem(value) is None


# ---- quantities and spec bounds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "kind"),
    [
        ("9" * 5000, QuantityKind.MEMORY),
        ("1" + "0" * 19, QuantityKind.STORAGE),
        ("1.0000000001", QuantityKind.CPU),
        ("4097", QuantityKind.CPU),
        ("4096001m", QuantityKind.CPU),
        ("2Pi", QuantityKind.MEMORY),
        ("1025Pi", QuantityKind.STORAGE),
        ("500m", QuantityKind.MEMORY),
        ("500m", QuantityKind.STORAGE),
        ("1 GB", QuantityKind.MEMORY),
        ("", QuantityKind.CPU),
    ],
)
def test_insane_quantities_are_refused(quantity: str, kind: QuantityKind) -> None:
    assert quantity_problem(quantity, kind) is not None


@pytest.mark.parametrize(
    ("quantity", "kind", "value"),
    [
        ("500m", QuantityKind.CPU, "0.5"),
        ("4096", QuantityKind.CPU, "4096"),
        ("1Pi", QuantityKind.MEMORY, str(2**50)),
        ("1024Pi", QuantityKind.STORAGE, str(2**60)),
        ("1099511627776", QuantityKind.STORAGE, str(2**40)),
        ("1.5Gi", QuantityKind.MEMORY, str(3 * 2**29)),
        ("512M", QuantityKind.MEMORY, "512000000"),
    ],
)
def test_sane_quantities_pass_with_their_value(
    quantity: str, kind: QuantityKind, value: str
) -> None:
    assert quantity_problem(quantity, kind) is None
    assert quantity_value(quantity) == Decimal(value)


def test_the_agent_reads_the_same_numbers() -> None:
    assert cpu_cores("500m") == 0.5
    assert memory_bytes("4Gi") == 4 * 2**30
    for bad in ("9" * 5000, "500m", "2Pi"):
        with pytest.raises(ValueError):
            memory_bytes(bad)
    with pytest.raises(ValueError):
        cpu_cores("5000")


def ltc(**changes: Any) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("changes", "paths"),
    [
        ({"resources": {"memoryLimit": "9" * 5000}}, ["resources.memoryLimit"]),
        ({"storage": {"size": "2048Pi"}}, ["storage.size"]),
        ({"resources": {"cpuRequest": "8", "cpuLimit": "2"}}, ["resources.cpuRequest"]),
        (
            {"resources": {"memoryRequest": "2Gi", "memoryLimit": "1Gi"}},
            ["resources.memoryRequest"],
        ),
        (
            {"resources": {"cpuLimit": "99999", "memoryRequest": "1m"}},
            ["resources.cpuLimit", "resources.memoryRequest"],
        ),
        ({"overrides": {"files": {"node": {"dbcache": 2**64}}}}, ["overrides.files.node.dbcache"]),
    ],
)
def test_spec_bounds_name_every_problem(changes: dict[str, Any], paths: list[str]) -> None:
    assert [p.path for p in spec_bound_problems(ltc(**changes))] == paths


def test_specs_within_bounds_have_no_problem() -> None:
    fine = ltc(
        storage={"size": "600Gi"},
        resources={"cpuRequest": "500m", "cpuLimit": "2", "memoryRequest": "1Gi"},
        overrides={"files": {"node": {"dbcache": 2**63 - 1}}},
    )
    assert spec_bound_problems(fine) == []
    # A request without a limit (or the other way round) has nothing to exceed.
    assert spec_bound_problems(ltc(resources={"cpuRequest": "64", "memoryLimit": "1Mi"})) == []


def test_a_spec_stored_before_the_bounds_still_loads() -> None:
    old = ltc(resources={"memoryLimit": "9" * 5000, "cpuRequest": "4", "cpuLimit": "1"})
    assert NodeSpec.model_validate(old.to_wire()) == old


# ---- runtime events ------------------------------------------------------------------------

NODE = "00000000-0000-4000-8000-000000000001"
CONTROL_PLANE_TYPES = [
    "node.lifecycle.transition",
    "node.removed",
    "node.created",
    "node.updated",
    "node.deleted",
    "node.lifecycle.requested",
    "apikey.revoked",
    "apikey.created",
    "member.added",
    "executor.connected",
    "executor.disconnected",
    "executor.reconnected",
    "executor.bind_refused",
    "executor.rebound",
    "organization.created",
    "sync.stalled",
    "runtime.tick",
    "node",
    "node.",
]


@pytest.mark.parametrize("event_type", CONTROL_PLANE_TYPES)
def test_executors_cannot_record_control_plane_types(event_type: str) -> None:
    with pytest.raises(ValidationError) as err:
        RuntimeEvent.model_validate({"nodeId": NODE, "type": event_type, "message": "x"})
    assert repr(event_type) in str(err.value)


def test_every_declared_type_is_in_the_executor_namespace() -> None:
    for event_type in RuntimeEventType:
        assert event_type.value.split(".")[0] in ("node", "executor"), event_type
        assert event_type.value not in CONTROL_PLANE_TYPES
        RuntimeEvent.model_validate({"nodeId": NODE, "type": event_type.value, "message": "x"})


@pytest.mark.parametrize(
    ("legacy", "now"),
    [
        ("process.crashed", RuntimeEventType.NODE_PROCESS_CRASHED),
        ("process.restarted", RuntimeEventType.NODE_PROCESS_RESTARTED),
    ],
)
def test_older_agents_names_are_mapped(legacy: str, now: RuntimeEventType) -> None:
    event = RuntimeEvent.model_validate({"nodeId": NODE, "type": legacy, "message": "x"})
    assert event.type is now
    assert event.to_wire()["type"] == now.value


@pytest.mark.parametrize(
    "raw",
    [
        {"payload": {"x": math.nan}},
        {"payload": {"x": math.inf}},
        {"payload": {"x": "a" * 5000}},
        {"payload": nested(10) and {"x": nested(10)}},
        {"occurredAt": "0001-01-01T00:00:00+05:00"},
        {"occurredAt": "9999-12-31T23:00:00-05:00"},
        {"occurredAt": "2030-01-01T00:00:00"},
        {"message": "a\x00b"},
        {"message": "\udc80"},
    ],
)
def test_event_fields_are_bounded(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RuntimeEvent.model_validate(
            {"nodeId": NODE, "type": "node.sync.error", "message": "m", **raw}
        )


def test_a_claimed_time_is_held_in_utc() -> None:
    event = RuntimeEvent.model_validate(
        {
            "nodeId": NODE,
            "type": "node.sync.error",
            "message": "m",
            "occurredAt": "2030-01-01T05:00:00+05:00",
        }
    )
    assert event.occurred_at == datetime(2030, 1, 1, tzinfo=UTC)


# ---- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bad"), [("ok", False), ("é✓ 日本", False), ("a\x00", True), ("\ud800x", True)]
)
def test_unstorable_text(text: str, bad: bool) -> None:
    assert (unstorable_text_problem(text) is not None) is bad


def test_storable_excerpt_cleans_and_cuts() -> None:
    assert storable_excerpt("a\x00b\ud800", 100) == "a\ufffdb?"
    assert storable_excerpt("x" * 10, 5) == "xxxx…"
    assert unstorable_text_problem(storable_excerpt("\x00\udfff" * 100, 50)) is None


# ---- what an executor declares -------------------------------------------------------------

HOSTILE = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "a b",
    "../etc",
    "a\x00",
    "x" * 200,
    "",
    "\u202eevil",
    "javascript:alert(1)",
    '"quoted"',
]


def capabilities_with(path: str, value: Any) -> dict[str, Any]:
    """A valid capabilities document with `value` placed at `path`."""
    client: dict[str, Any] = {
        "name": "litecoind",
        "versions": ["0.21.4"],
        "managedFlags": ["datadir"],
        "managedConfigKeys": ["datadir"],
        "pathFlags": ["asmap"],
        "pathConfigKeys": ["asmap"],
        "configValueRules": ["no-hash"],
    }
    chain: dict[str, Any] = {
        "chain": "litecoin",
        "networks": ["regtest"],
        "nodeTypes": ["full"],
        "roles": [{"role": "node", "clients": [client]}],
        "resourceDefaults": {"regtest": {"cpuRequest": "1", "memoryRequest": "1Gi"}},
    }
    doc: dict[str, Any] = {"chains": [chain], "storageClasses": ["fast"]}
    targets: dict[str, tuple[dict[str, Any], str, bool]] = {
        "chain": (chain, "chain", False),
        "network": (chain, "networks", True),
        "node type": (chain, "nodeTypes", True),
        "role": (chain["roles"][0], "role", False),
        "client": (client, "name", False),
        "version": (client, "versions", True),
        "managed flag": (client, "managedFlags", True),
        "managed key": (client, "managedConfigKeys", True),
        "path flag": (client, "pathFlags", True),
        "path key": (client, "pathConfigKeys", True),
        "value rule": (client, "configValueRules", True),
        "storage class": (doc, "storageClasses", True),
        "resource default key": (chain, "resourceDefaults", False),
        "resource default value": (chain["resourceDefaults"]["regtest"], "cpuRequest", False),
    }
    target, key, is_list = targets[path]
    if path == "resource default key":
        target[key] = {value: {}}
    else:
        target[key] = [value] if is_list else value
    return doc


CAPABILITY_FIELDS = [
    "chain",
    "network",
    "node type",
    "role",
    "client",
    "version",
    "managed flag",
    "managed key",
    "path flag",
    "path key",
    "value rule",
    "storage class",
    "resource default key",
    "resource default value",
]


@pytest.mark.parametrize("field", CAPABILITY_FIELDS)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_capability_string_matches_a_name_pattern(field: str, hostile: str) -> None:
    valid = {"version": "1.0", "node type": "archive", "resource default value": "2"}
    ExecutorCapabilities.model_validate(capabilities_with(field, valid.get(field, "regtest")))
    with pytest.raises(ValidationError):
        ExecutorCapabilities.model_validate(capabilities_with(field, hostile))


@pytest.mark.parametrize(
    ("path", "count"),
    [
        (("chains",), 65),
        (("chains", 0, "networks"), 65),
        (("chains", 0, "roles"), 17),
        (("chains", 0, "roles", 0, "clients"), 33),
        (("chains", 0, "roles", 0, "clients", 0, "versions"), 257),
        (("chains", 0, "roles", 0, "clients", 0, "managedFlags"), 4097),
        (("storageClasses",), 257),
    ],
)
def test_capability_lists_are_bounded(path: tuple[Any, ...], count: int) -> None:
    doc = capabilities_with("chain", "litecoin")
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    items = target[path[-1]]
    target[path[-1]] = [items[0]] * (count - 1)
    ExecutorCapabilities.model_validate(doc)
    target[path[-1]] = [items[0]] * count
    with pytest.raises(ValidationError):
        ExecutorCapabilities.model_validate(doc)


@pytest.mark.parametrize(
    "resources",
    [
        {"cpuCores": -1},
        {"cpuCores": 1e7},
        {"memoryBytes": 2**63},
        {"diskTotalBytes": -5},
        {"diskAvailableBytes": 2**70},
        {"cpuCores": math.inf},
    ],
)
def test_host_resources_are_bounded(resources: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HostResources.model_validate(resources)


@pytest.mark.parametrize(
    "process",
    [
        {"role": "</script>", "status": "running"},
        {"role": "Node", "status": "running"},
        {"role": "node", "status": "running", "height": 2**64},
        {"role": "node", "status": "running", "message": "a\x00"},
        {"role": "node", "status": "running", "pid": 2**40},
    ],
)
def test_observed_processes_are_bounded(process: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ObservedProcess.model_validate(process)
    with pytest.raises(ValidationError):
        ObservedNodeState.model_validate({"revision": 1, "processes": [process]})


def test_the_executor_version_is_a_version() -> None:
    base = {"name": "host-1", "kind": "agent"}
    SyncExecutorRequest.model_validate({**base, "version": "0.1.0.dev3+g1a2b"})
    for bad in ("<b>1</b>", "", "1 0", "v" * 65):
        with pytest.raises(ValidationError):
            SyncExecutorRequest.model_validate({**base, "version": bad})


# Scalars at and past every bound, text with and without what a database refuses.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**63 - 1, -(2**63 - 1), 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["abc", "\x00", "é", "\ud800", "x" * 7, "k\x00"]),
)
_json_like = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.sampled_from(["\x00", "\udc00", "y" * 7])),
            children,
            max_size=4,
        ),
    ),
    max_leaves=30,
)
_small_limits = JsonLimits(max_depth=3, max_values=12, max_string_length=6, max_encoded_bytes=200)


@settings(max_examples=400, deadline=None)
@given(value=_json_like, small=st.booleans())
def test_the_plain_fast_check_agrees_with_the_full_walk(value: Any, small: bool) -> None:
    """`json_value_problem` answers plain values without the walk that names paths; the answer
    (problem or none, and which) is the walk's, for every value."""
    limits = _small_limits if small else JsonLimits()
    assert json_value_problem(value, limits) == _walk_problem(value, limits)


@settings(max_examples=400, deadline=None)
@given(value=_json_like)
def test_the_plain_check_s_size_bound_is_never_below_the_encoded_size(value: Any) -> None:
    """The plain check answers "within the size limit" from a bound instead of encoding the
    value: the bound must be at least what `json.dumps` makes of every plain value."""
    bound = _plain_size_bound(value, JsonLimits())
    if bound is not None:
        assert bound >= len(json.dumps(value, ensure_ascii=False).encode())


def test_the_size_bound_holds_for_the_longest_numbers_and_escapes() -> None:
    worst = {
        '\x1f"\\': ["\x01" * 50, -MAX_JSON_INTEGER, -2.2250738585072014e-308, False, None],
        "n": [{"": []}],
    }
    bound = _plain_size_bound(worst, JsonLimits())
    assert bound is not None and bound >= len(json.dumps(worst, ensure_ascii=False).encode())
