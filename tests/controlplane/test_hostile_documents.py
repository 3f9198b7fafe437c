"""Hostile GraphQL documents, generated: every document up to the body limit is answered within
2 s with data or a typed error, on SQLite and PostgreSQL, while /healthz keeps answering fast.

Documents are built from the grammar's pieces and the shapes known to hurt parsers and validators
(fragments spreading fragments, repeated fields and aliases, directives, deep nesting, cycles,
huge literals, comments, broken syntax), then amplified up to the 1 MiB body limit.
"""

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.controlplane.test_request_limits import (
    ANSWER_WITHIN_S,
    KNOWN_CODES,
    SENDER,
    assert_healthy,
)
from tests.support.fleet import Org
from tests.support.gql import Client
from tests.support.healthz import HealthzSampler
from tests.support.server import ServerProcess

# Answers are timed and /healthz sampled meanwhile (./dev test runs these alone).
pytestmark = pytest.mark.latency

MAX_BODY = 1024 * 1024
FIELD_NAMES = [
    "me",
    "nodes",
    "node",
    "executors",
    "events",
    "apiKeys",
    "members",
    "organization",
    "nodeRevisions",
    "executorSpecs",
    "items",
    "executor",
    "id",
    "name",
    "email",
    "capabilities",
    "nodeCount",
    "spec",
    "__typename",
    "__schema",
    "__type",
    "types",
    "fields",
    "ofType",
    "unknownField",
]
TYPES = ["Query", "Mutation", "Node", "Executor", "Me", "NodeConnection", "__Type", "Nope"]

names = st.sampled_from(FIELD_NAMES)
aliases = st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True))
literal = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["1e400", "-1e400", "0.5", "true", "false", "null", "NaN", "RUNNING"]),
    st.text(max_size=40).map(json.dumps),
    st.just('"""' + "block " * 20 + '"""'),
    st.just('{name: "x", chain: "\\u0000"}'),
    st.just("[1, 2, [3, [4]]]"),
    st.just("$v"),
)
arguments = st.one_of(
    st.just(""),
    st.lists(
        st.tuples(st.sampled_from(["first", "id", "filter", "after", "name", "x"]), literal),
        max_size=3,
    ).map(lambda args: "(" + ", ".join(f"{k}: {v}" for k, v in args) + ")" if args else ""),
)
directives = st.lists(
    st.sampled_from(["@include(if: true)", "@skip(if: false)", "@deprecated", "@nope(x: 1)"]),
    max_size=3,
).map(" ".join)


def selection_sets(fragment_count: int) -> st.SearchStrategy[str]:
    """Selection sets (with braces) that may spread the document's fragments."""
    leaf = st.one_of(
        st.tuples(aliases, names, arguments, directives).map(
            lambda t: f"{t[0] + ': ' if t[0] else ''}{t[1]}{t[2]} {t[3]}"
        ),
        st.integers(0, max(fragment_count - 1, 0)).map(lambda i: f"...F{i}")
        if fragment_count
        else st.just("__typename"),
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(aliases, names, arguments, inner).map(
                lambda t: f"{t[0] + ': ' if t[0] else ''}{t[1]}{t[2]} {t[3]}"
            ),
            st.tuples(st.sampled_from(TYPES), inner).map(lambda t: f"... on {t[0]} {t[1]}"),
            st.lists(inner, min_size=1, max_size=4).map(lambda xs: "{ " + " ".join(xs) + " }"),
        )

    body = st.recursive(leaf, extend, max_leaves=12)
    return st.lists(body, min_size=1, max_size=5).map(lambda xs: "{ " + " ".join(xs) + " }")


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A document of operations and fragments, sometimes amplified or broken on purpose."""
    fragment_count = draw(st.integers(0, 6))
    fragments = [
        f"fragment F{i} on {draw(st.sampled_from(TYPES))} {draw(selection_sets(fragment_count))}"
        for i in range(fragment_count)
    ]
    keyword = draw(st.sampled_from(["", "query", "query Q($v: Int)", "mutation", "subscription"]))
    operation = f"{keyword} {draw(selection_sets(fragment_count))}".strip()
    document = " ".join([operation, *fragments])
    shape = draw(
        st.sampled_from(
            ["plain", "repeat", "doubling", "deep", "comments", "broken", "huge string", "ops"]
        )
    )
    if shape == "repeat":
        # The selection repeated until the body limit (fields, aliases, directives, spreads).
        times = draw(st.sampled_from([10, 100, 1_000, 10_000, 100_000]))
        chunk = draw(selection_sets(0))[2:-2]
        document = "{ " + (chunk + " ") * max(1, min(times, MAX_BODY // max(len(chunk), 1))) + "}"
    elif shape == "doubling":
        levels = draw(st.integers(2, 60))
        chain = " ".join(
            f"fragment D{i} on Query {{ ...D{i - 1} ...D{i - 1} }}" for i in range(1, levels)
        )
        document = f"query {{ ...D{levels - 1} }} fragment D0 on Query {{ __typename }} {chain}"
    elif shape == "deep":
        depth = draw(st.sampled_from([11, 50, 500, 5_000, 50_000]))
        document = "{ " + "me { " * depth + "id" + " }" * (depth + 1)
    elif shape == "comments":
        document = document + ("\n# " + "c" * 50) * draw(st.sampled_from([10, 1_000, 15_000]))
    elif shape == "broken":
        cut = draw(st.integers(0, max(len(document) - 1, 0)))
        document = document[:cut] + draw(st.sampled_from(["", "{", "}", "(", '"', "...", "@"]))
    elif shape == "huge string":
        document = (
            '{ node(id: "' + "x" * draw(st.sampled_from([100, 100_000, 900_000])) + '") { id } }'
        )
    elif shape == "ops":
        count = draw(st.sampled_from([2, 60, 5_000]))
        document = " ".join(f"query Q{i} {{ __typename }}" for i in range(count))
    return document


def check_answer(base_url: str, document: str, token: str | None) -> None:
    body = json.dumps({"query": document})
    if len(body.encode()) > MAX_BODY:
        body = json.dumps({"query": document[: MAX_BODY - 100]})
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    started = time.perf_counter()
    response = SENDER.post(f"{base_url}/graphql", content=body, headers=headers, timeout=10)
    took = time.perf_counter() - started
    assert took < ANSWER_WITHIN_S, f"{took:.2f} s for a {len(document)}-char document"
    assert response.status_code < 500, response.text[:300]
    answer: dict[str, Any] = response.json()
    for error in answer.get("errors") or []:
        assert error.get("extensions", {}).get("code") in KNOWN_CODES, error


def test_hostile_documents_are_answered_in_time_and_typed(server: ServerProcess, org: Org) -> None:
    reader: Client = org.add_member("MEMBER")

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(document=documents(), signed_in=st.booleans())
    def check(document: str, signed_in: bool) -> None:
        check_answer(server.url, document, reader.token if signed_in else None)

    with HealthzSampler(server.url) as sampler:
        check()
    assert_healthy(sampler.result)


@pytest.mark.parametrize(
    "document",
    [
        "{ " + "__typename " * 100_000 + "}",
        "{ " + "me { " * 100_000,
        "query { ...F } fragment F on Query { ...F }",
        "{ " + "a: __typename @include(if: true) " * 25_000 + "}",
        "\ufeff{ __typename }",
        "{ __typename } " * 40_000,
    ],
    ids=["repeated", "unclosed deep", "self spread", "aliased directives", "bom", "many ops"],
)
def test_known_hostile_shapes(server: ServerProcess, document: str) -> None:
    check_answer(server.url, document, None)
