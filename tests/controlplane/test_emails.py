"""Finding 11 of issue 7, "any string is accepted as an email", against a real server on SQLite
and PostgreSQL: addresses are normalized and validated in one place, with typed errors that
write nothing."""

from typing import Any

import pytest

from tests.support.db import cells_containing
from tests.support.fleet import Org, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess
from tests.support.state import org_state

INVITE = "mutation($e: String!) { inviteMember(email: $e, role: MEMBER) { email } }"
CREATE_ORG = "mutation($n: String!, $e: String!) { createOrganization(name: $n, ownerEmail: $e) { inviteToken } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"

NOT_ADDRESSES = [
    "",
    "   ",
    "plain",
    "a@",
    "@b.test",
    "a@b@c.test",
    "a b@c.test",
    "a\n@b.test",
    "a..b@c.test",
    ".a@b.test",
    "a.@b.test",
    "a@b..test",
    "a@.b.test",
    "a@b.test.",
    "a@-b.test",
    "a@b-.test",
    "a@b_c.test",
    "<script>alert(1)</script>@x.test",
    "a@x.test<script>",
    '"quoted"@x.test',
    "a@[127.0.0.1]",
    "a@1.2.3.4",
    "jörg@x.test",
    "a@exämple.test",
    "a" * 65 + "@x.test",
    "a@" + "b" * 64 + ".test",
    "a@" + ".".join(["abcdefghij"] * 24) + ".test",
]


def error_of(client: Client, query: str, variables: dict[str, Any]) -> GraphQLError:
    with pytest.raises(GraphQLError) as err:
        client(query, variables)
    return err.value


def test_only_real_addresses_are_accepted(
    org: Org, server: ServerProcess, system_admin: Client
) -> None:
    before = org_state(org, server.database_url)
    name = unique("org")
    for bad in NOT_ADDRESSES:
        err = error_of(org.owner, INVITE, {"e": bad})
        assert (err.code, err.extensions.get("field")) == ("invalid_input", "email"), bad
    for bad in NOT_ADDRESSES:
        err = error_of(system_admin, CREATE_ORG, {"n": f"{name}-{len(bad)}", "e": bad})
        assert err.code == "invalid_input", bad
        assert err.extensions.get("field") == "ownerEmail", bad
    assert org_state(org, server.database_url) == before
    assert cells_containing(server.database_url, name) == []

    # Real addresses, including the dotless and special-use domains of self-hosted setups,
    # are kept in one normal form: trimmed and lower-cased.
    tag = unique("t")
    for given, stored in [
        (f"  First.Last+{tag}@Sub.Example.TEST ", f"first.last+{tag}@sub.example.test"),
        (f"ops-{tag}@localhost", f"ops-{tag}@localhost"),
        (f"o'brien-{tag}@corp.local", f"o'brien-{tag}@corp.local"),
        (
            f"{tag}_x!#$%&*/=?^`{{|}}~@xn--bcher-kva.example",
            f"{tag}_x!#$%&*/=?^`{{|}}~@xn--bcher-kva.example",
        ),
    ]:
        assert org.owner(INVITE, {"e": given})["inviteMember"]["email"] == stored


def test_sign_in_with_a_malformed_address_is_an_ordinary_failure(server: ServerProcess) -> None:
    anon = Client(server.url)
    wrong = error_of(anon, LOGIN, {"e": f"{unique('nobody')}@example.test", "p": "password-1"})
    for bad in ("", "plain", "<script>@x", "a" * 400):
        err = error_of(anon, LOGIN, {"e": bad, "p": "password-1"})
        assert (err.code, err.errors[0]["message"]) == (wrong.code, wrong.errors[0]["message"])
