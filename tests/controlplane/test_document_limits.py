"""The document limits as pure rules: every limit refuses by name, every real client's document
passes, and measuring is linear however fragments spread each other."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
from graphql import get_introspection_query, parse

from nodeplane.controlplane.api.document_guard import long_poll_seconds
from nodeplane.controlplane.api.limits import (
    DocumentLimits,
    DocumentRefused,
    DocumentReport,
    measure_document,
)
from nodeplane.controlplane.api.schema import DOCUMENT_LIMITS, schema
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.web import pages
from nodeplane.protocol import MAX_POLL_WAIT_SECONDS, executor_documents

GRAPHQL_SCHEMA = schema._schema
APP_JS = Path(pages.__file__).parent / "static" / "app.js"


def measure(document: str, limits: DocumentLimits = DOCUMENT_LIMITS) -> DocumentReport:
    return measure_document(GRAPHQL_SCHEMA, parse(document), limits)


def refused_by(document: str, limits: DocumentLimits = DOCUMENT_LIMITS) -> str:
    with pytest.raises(DocumentRefused) as refused:
        measure(document, limits)
    assert refused.value.code == "bad_request"
    return refused.value.limit


def doubling(levels: int) -> str:
    fragments = " ".join(
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels)
    )
    return f"query {{ ...F{levels - 1} }} fragment F0 on Query {{ __typename }} {fragments}"


def app_js_documents() -> list[str]:
    """The GraphQL documents in the UI's script, with the constants they interpolate
    (`${NODE_FIELDS}`, `${POLL_FIRST}`) filled in."""
    source = APP_JS.read_text()

    def constant(match: re.Match[str]) -> str:
        name = match.group(1)
        found = re.search(rf"const {name} = (?:`([^`]*)`|(\d+);)", source)
        assert found is not None, f"app.js interpolates {name}, which is not a constant"
        return found.group(1) if found.group(1) is not None else found.group(2)

    literals = re.findall(r"`((?:query|mutation|\{)[^`]*)`", source)
    documents = [re.sub(r"\$\{(\w+)\}", constant, lit) for lit in literals]
    assert len(documents) >= 8, "the UI's documents were not found in app.js"
    return documents


def client_documents() -> dict[str, str]:
    """What the web pages, the UI's script, the agent and GraphiQL send."""
    documents = {
        "pages.NODES": pages.NODES,
        "pages.NODE": pages.NODE,
        "pages.EXECUTORS": pages.EXECUTORS,
        "pages.EVENTS": pages.EVENTS,
        "pages.API_KEYS": pages.API_KEYS,
        "agent sync": executor_documents.SYNC_EXECUTOR,
        "agent poll": executor_documents.POLL_SPECS,
        "agent confirm": executor_documents.CONFIRM_TEARDOWN,
        "agent report": executor_documents.REPORT_RUNTIME_EVENTS,
        "GraphiQL introspection": get_introspection_query(
            descriptions=True,
            specified_by_url=True,
            directive_is_repeatable=True,
            schema_description=True,
            input_value_deprecation=True,
        ),
    }
    documents.update({f"app.js #{i}": d for i, d in enumerate(app_js_documents())})
    return documents


@pytest.mark.parametrize("name", sorted(client_documents()))
def test_every_real_client_document_is_within_the_limits(name: str) -> None:
    report = measure(client_documents()[name])
    assert report.cost <= DOCUMENT_LIMITS.max_cost


def test_the_spec_long_poll_is_recognised() -> None:
    report = measure(executor_documents.POLL_SPECS)
    assert "executorSpecs" in next(iter(report.root_fields.values()))
    # It may hold its request for the poll cap on top of the request's time budget.
    assert long_poll_seconds(report) == MAX_POLL_WAIT_SECONDS == 30
    assert long_poll_seconds(report, 2.5) == 2.5
    assert long_poll_seconds(measure("{ me { id } }")) == 0


def test_the_poll_cap_is_thirty_seconds_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODEPLANE_MAX_POLL_WAIT", raising=False)
    assert Settings().max_poll_wait == MAX_POLL_WAIT_SECONDS
    monkeypatch.setenv("NODEPLANE_MAX_POLL_WAIT", "4.5")
    assert Settings().max_poll_wait == 4.5


def test_introspection_is_flagged_and_costs_a_flat_amount() -> None:
    assert measure("{ __schema { types { name fields { name } } } }").introspection
    assert measure('{ __type(name: "Node") { name } }').introspection
    assert not measure("{ __typename me { email } }").introspection
    # Nested `ofType` levels do not count as depth.
    deep = "{ __schema { types { " + "ofType { " * 14 + "name" + " }" * 14 + " } } }"
    assert measure(deep).cost <= DOCUMENT_LIMITS.max_cost


def test_fragment_spreads_are_measured_once_however_often_they_are_spread() -> None:
    # Finding 1: 2**39 fields when expanded. Measured with limits out of the way, the count is
    # exact, and it is reached in forty steps (an expanding walk would never finish).
    unlimited = replace(DOCUMENT_LIMITS, max_fields=2**62, max_same_name=2**62)
    unlimited = replace(unlimited, max_fragment_spreads=2**62, max_cost=2**62)
    report = measure(doubling(40), unlimited)
    assert report.cost == 2**39
    assert refused_by(doubling(40)) in {"sameName", "fields"}


@pytest.mark.parametrize(
    ("document", "limit"),
    [
        ("{ " + " ".join(f"a{i}: __typename" for i in range(101)) + " }", "aliases"),
        ("{ " + "me { email } " * 11 + "}", "sameName"),
        (
            "{ "
            + " ".join(f"a{i}: me {{ id email role kind isSystemAdmin }}" for i in range(100))
            + " }",
            "fields",
        ),
        ("{ __typename " + "@include(if: true) " * 51 + "}", "directives"),
        ("{ me " + "{ organization " * 10 + "{ id }" + " }" * 11, "depth"),
        (
            "query(" + " ".join(f"$v{i}: Int" for i in range(51)) + ") { __typename }",
            "variables",
        ),
        (" ".join(f"query Q{i} {{ __typename }}" for i in range(51)), "definitions"),
        (
            "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
            "fragmentCycle",
        ),
        (
            "{ "
            + " ".join(f"n{i}: nodes(first: 200) {{ items {{ id name }} }}" for i in range(20))
            + " }",
            "cost",
        ),
        (
            "{ "
            + " ".join(f"e{i}: executors {{ id name capabilities }}" for i in range(40))
            + " }",
            "cost",
        ),
    ],
)
def test_each_limit_refuses_by_name(document: str, limit: str) -> None:
    assert refused_by(document) == limit


def test_spreads_count_with_fragments_expanded() -> None:
    # Empty fragments: only the spreads themselves add up.
    fragments = " ".join(f"fragment F{i} on Query {{ }}" for i in range(40))
    spreads = " ".join(f"...F{i} ...F{i} ...F{i}" for i in range(40))
    assert refused_by(f"query {{ {spreads} }} {fragments}") == "fragmentSpreads"


def test_page_sizes_drive_the_cost() -> None:
    small = measure("{ nodes(first: 10) { items { id name } } }").cost
    large = measure("{ nodes(first: 200) { items { id name } } }").cost
    variable = measure("query($n: Int) { nodes(first: $n) { items { id name } } }").cost
    default = measure("{ nodes { items { id name } } }").cost
    assert small < default < large == variable
    # A page larger than the resolver's maximum costs no more than the maximum.
    assert measure("{ nodes(first: 100000) { items { id name } } }").cost == large


def test_a_second_fragment_of_the_same_name_is_measured_too() -> None:
    heavy = "fragment F on Query { " + "me { id } " * 11 + "}"
    assert refused_by(f"query {{ ...F }} fragment F on Query {{ __typename }} {heavy}") == (
        "sameName"
    )
