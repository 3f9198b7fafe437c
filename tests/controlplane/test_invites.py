"""Findings 3 and 4 (pre-hijack) of issue 7, against a real server on SQLite and PostgreSQL:
an invite is no password oracle, an existing account joins only when signed in as itself, and
`createOrganization` always issues an owner invite."""

from typing import Any

import pytest

from tests.support.addresses import AddressedClient, fresh_loopback_address
from tests.support.fleet import Org, make_org, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess

INVITE = "mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { token } }"
ACCEPT = "mutation($t: String!, $p: String!) { acceptInvite(token: $t, password: $p) { token me { email role organization { id } } } }"
# Signed in, no password is needed (the argument is optional).
ACCEPT_SIGNED_IN = "mutation($t: String!) { acceptInvite(token: $t) { token me { email role organization { id } } } }"
ACCEPT_MAYBE = (
    "mutation($t: String!, $p: String) { acceptInvite(token: $t, password: $p) { token } }"
)
CREATE_ORG = "mutation($n: String!, $e: String!) { createOrganization(name: $n, ownerEmail: $e) { organization { id } inviteToken } }"
LOGIN = "mutation($e: String!, $p: String!, $o: UUID) { login(email: $e, password: $p, organizationId: $o) { token me { role organization { id } } } }"
MEMBERS = "{ members { email role } }"
ME = "{ me { email role organization { id } } }"
EVENTS = '{ events(filter: {type: "member.joined"}) { items { type actor payload } } }'
PERSONAL_KEY = 'mutation { createApiKey(name: "mine", kind: PERSONAL) { secret } }'
MEMBER_PASSWORD = "member-password-1"  # what Org.add_member signs members up with


def error_of(client: Client, query: str, variables: dict[str, Any]) -> GraphQLError:
    with pytest.raises(GraphQLError) as err:
        client(query, variables)
    return err.value


def invite(org: Org, email: str, role: str = "MEMBER") -> str:
    token: str = org.owner(INVITE, {"e": email, "r": role})["inviteMember"]["token"]
    return token


def member_emails(org: Org) -> set[str]:
    return {m["email"] for m in org.owner(MEMBERS)["members"]}


def test_accept_invite_is_no_password_oracle(
    org: Org, server: ServerProcess, system_admin: Client
) -> None:
    """The issue's attack: an owner invites another organization's member and guesses."""
    victim_org = make_org(server.url, system_admin)
    victim = victim_org.add_member("MEMBER")
    victim_email = victim(ME)["me"]["email"]
    token = invite(org, victim_email, "ADMIN")
    attacker = AddressedClient(server.url, fresh_loopback_address())

    answers = set()
    for guess in ["guess-password-1", "guess-password-2", MEMBER_PASSWORD, "x"]:
        err = error_of(attacker, ACCEPT, {"t": token, "p": guess})
        answers.add((err.code, err.errors[0]["message"], err.extensions.get("field")))
        assert "exists" not in err.errors[0]["message"]
    # The right password is answered like every wrong one: the password is never looked at.
    assert len(answers) == 1
    (code, message, _field) = answers.pop()
    assert code == "unauthenticated" and "sign in" in message
    assert error_of(attacker, ACCEPT_MAYBE, {"t": token, "p": None}).errors[0]["message"] == message

    # Nothing was written: no membership, the invite still unused, no session for anyone.
    assert victim_email not in member_emails(org)
    assert victim_email not in {e["payload"]["email"] for e in org.owner(EVENTS)["events"]["items"]}
    # The real account, signed in as itself, joins with the same invite and no password.
    joined = victim(ACCEPT_SIGNED_IN, {"t": token})["acceptInvite"]
    assert joined["me"]["email"] == victim_email
    assert joined["me"]["organization"]["id"] == org.id and joined["me"]["role"] == "ADMIN"
    assert victim_email in member_emails(org)
    assert error_of(victim, ACCEPT_SIGNED_IN, {"t": token}).code == "not_found"  # used once
    # Its sign-in in its first organization is untouched.
    assert victim(ME)["me"]["organization"]["id"] == victim_org.id


def test_a_signed_in_account_accepts_only_its_own_invites(
    org: Org, server: ServerProcess, system_admin: Client
) -> None:
    other = make_org(server.url, system_admin)
    outsider = other.add_member("MEMBER")
    outsider_key = outsider(PERSONAL_KEY)["createApiKey"]["secret"]
    existing = other.add_member("MEMBER")(ME)["me"]["email"]
    to_existing = invite(org, existing)
    to_new = invite(org, f"{unique('new')}@example.test")

    answers = set()
    for who in (outsider, outsider.as_(outsider_key)):
        for token in (to_existing, to_new):
            err = error_of(who, ACCEPT, {"t": token, "p": MEMBER_PASSWORD})
            answers.add((err.code, err.errors[0]["message"]))
    # Forbidden, in words that do not say whether the invited address has an account.
    assert len(answers) == 1 and answers.pop()[0] == "forbidden"
    executor = Client(server.url, org.executor_key())
    assert error_of(executor, ACCEPT, {"t": to_new, "p": MEMBER_PASSWORD}).code == "forbidden"
    assert member_emails(org) == {org.owner(ME)["me"]["email"]}

    # Invites still work for who they are meant for: a new account is made signed out...
    made = Client(server.url)(ACCEPT, {"t": to_new, "p": "new-password-1"})["acceptInvite"]
    assert made["me"]["organization"]["id"] == org.id
    # ...and a personal key of the invited account counts as being signed in as it.
    owner_of_other_key = other.owner(PERSONAL_KEY)["createApiKey"]["secret"]
    token = invite(org, other.owner(ME)["me"]["email"])
    joined = Client(server.url, owner_of_other_key)(ACCEPT_SIGNED_IN, {"t": token})["acceptInvite"]
    assert joined["me"]["organization"]["id"] == org.id
    actors = {e["payload"]["email"]: e["actor"] for e in org.owner(EVENTS)["events"]["items"]}
    assert actors[other.owner(ME)["me"]["email"]] == other.owner(ME)["me"]["email"]


def test_accept_invite_for_a_new_account_still_checks_the_password_rule(
    org: Org, server: ServerProcess
) -> None:
    token = invite(org, f"{unique('new')}@example.test")
    anon = Client(server.url)
    for bad in (None, "short", "x" * 1025):
        err = error_of(anon, ACCEPT_MAYBE, {"t": token, "p": bad})
        assert err.code == "invalid_input" and err.extensions["field"] == "password"
    assert len(member_emails(org)) == 1
    assert anon(ACCEPT, {"t": token, "p": "a-good-password"})["acceptInvite"]["token"]
    assert error_of(anon, ACCEPT, {"t": token, "p": "a-good-password"}).code == "not_found"


def test_create_organization_never_hands_an_existing_account_the_ownership(
    org: Org, server: ServerProcess, system_admin: Client
) -> None:
    """Pre-hijack: an attacker makes the account of a future owner's email in advance."""
    ceo = f"ceo-{unique('newco')}@example.test"
    squatter_token = invite(org, ceo)
    squatter = Client(server.url)(ACCEPT, {"t": squatter_token, "p": "attacker-password"})
    squatter_login = squatter["acceptInvite"]["token"]

    created = system_admin(CREATE_ORG, {"n": unique("newco"), "e": ceo})["createOrganization"]
    newco = created["organization"]["id"]
    assert created["inviteToken"]  # the owner is invited, as for a brand-new email
    # The squatter's account is not a member of the new organization...
    err = error_of(Client(server.url), LOGIN, {"e": ceo, "p": "attacker-password", "o": newco})
    assert err.code == "forbidden"
    assert Client(server.url, squatter_login)(ME)["me"]["organization"]["id"] == org.id
    # ...and the invite, which only the system admin holds, cannot be used signed out.
    err = error_of(Client(server.url), ACCEPT, {"t": created["inviteToken"], "p": "any-password"})
    assert err.code == "unauthenticated"


def test_make_org_flow_still_creates_an_owner(server: ServerProcess, system_admin: Client) -> None:
    made = make_org(server.url, system_admin)
    assert made.owner(ME)["me"]["role"] == "OWNER"
    assert made.owner(ME)["me"]["organization"]["id"] == made.id
