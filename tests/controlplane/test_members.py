"""Finding 4 of issue 7 (no way to remove a member or end their sessions), against a real server
on SQLite and PostgreSQL: `removeMember`, `changeMemberRole` and `revokeSessions`, their rules,
their events, and that a removed member's session stops working at once."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.fleet import Org, make_org, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess

MEMBERS = "{ members { id email role } }"
ME = "{ me { email role organization { id } } }"
NODES = "{ nodes { items { id } } }"
REMOVE = "mutation($m: UUID!) { removeMember(memberId: $m) { member { id email role } sessionsEnded apiKeysRevoked } }"
CHANGE = (
    "mutation($m: UUID!, $r: Role!) { changeMemberRole(memberId: $m, role: $r) { id email role } }"
)
REVOKE = "mutation($m: UUID!) { revokeSessions(memberId: $m) { member { email } sessionsEnded apiKeysRevoked } }"
PERSONAL_KEY = 'mutation { createApiKey(name: "mine", kind: PERSONAL) { secret } }'
EXECUTOR_KEY = 'mutation { createApiKey(name: "exec", kind: EXECUTOR) { secret } }'
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
INVITE = "mutation($e: String!) { inviteMember(email: $e, role: MEMBER) { token } }"
EVENTS = "query($t: String) { events(filter: {type: $t}) { items { type actor payload } } }"
MEMBER_PASSWORD = "member-password-1"  # what Org.add_member signs members up with


def error_of(client: Client, query: str, variables: dict[str, Any]) -> GraphQLError:
    with pytest.raises(GraphQLError) as err:
        client(query, variables)
    return err.value


def member_id(org: Org, who: Client) -> str:
    email = who(ME)["me"]["email"]
    ids = [m["id"] for m in org.owner(MEMBERS)["members"] if m["email"] == email]
    assert len(ids) == 1
    return str(ids[0])


def events_of(org: Org, kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = org.owner(EVENTS, {"t": kind})["events"]["items"]
    return items


def test_a_removed_member_loses_access_at_once(org: Org, server: ServerProcess) -> None:
    member = org.add_member("ADMIN")
    email = member(ME)["me"]["email"]
    personal = member(PERSONAL_KEY)["createApiKey"]["secret"]
    executor_key = member(EXECUTOR_KEY)["createApiKey"]["secret"]
    second_session = Client(
        server.url, Client(server.url)(LOGIN, {"e": email, "p": MEMBER_PASSWORD})["login"]["token"]
    )
    for who in (member, member.as_(personal), second_session):
        assert who(NODES)["nodes"]["items"] == []

    removed = org.owner(REMOVE, {"m": member_id(org, member)})["removeMember"]
    assert removed["member"]["email"] == email
    assert removed["sessionsEnded"] == 2 and removed["apiKeysRevoked"] == 1
    for who in (member, member.as_(personal), second_session):
        assert error_of(who, NODES, {}).code == "unauthenticated"
    # Executor keys belong to their executor, not to the person who made them.
    assert Client(server.url, executor_key)("{ me { kind } }")["me"]["kind"] == "executor"
    assert email not in {m["email"] for m in org.owner(MEMBERS)["members"]}
    # Signing in again finds no membership of this organization.
    again = Client(
        server.url, Client(server.url)(LOGIN, {"e": email, "p": MEMBER_PASSWORD})["login"]["token"]
    )
    assert again(ME)["me"]["organization"] is None

    [event] = events_of(org, "member.removed")
    assert event["actor"] == org.owner(ME)["me"]["email"]
    assert event["payload"]["email"] == email and event["payload"]["role"] == "admin"


def test_revoke_sessions_ends_sessions_and_personal_keys_but_keeps_the_member(
    org: Org, server: ServerProcess
) -> None:
    member = org.add_member("MEMBER")
    email = member(ME)["me"]["email"]
    personal = member(PERSONAL_KEY)["createApiKey"]["secret"]
    revoked = org.owner(REVOKE, {"m": member_id(org, member)})["revokeSessions"]
    assert revoked == {"member": {"email": email}, "sessionsEnded": 1, "apiKeysRevoked": 1}
    assert error_of(member, NODES, {}).code == "unauthenticated"
    assert error_of(member.as_(personal), NODES, {}).code == "unauthenticated"
    back = Client(
        server.url, Client(server.url)(LOGIN, {"e": email, "p": MEMBER_PASSWORD})["login"]["token"]
    )
    assert back(ME)["me"]["organization"]["id"] == org.id
    [event] = events_of(org, "member.sessions_revoked")
    assert event["actor"] == org.owner(ME)["me"]["email"] and event["payload"]["email"] == email


def test_role_changes_take_effect_at_once_and_are_recorded(org: Org) -> None:
    member = org.add_member("MEMBER")
    mid = member_id(org, member)
    assert error_of(member, INVITE, {"e": f"{unique('x')}@example.test"}).code == "forbidden"
    assert org.owner(CHANGE, {"m": mid, "r": "ADMIN"})["changeMemberRole"]["role"] == "ADMIN"
    assert member(INVITE, {"e": f"{unique('x')}@example.test"})["inviteMember"]["token"]
    assert org.owner(CHANGE, {"m": mid, "r": "MEMBER"})["changeMemberRole"]["role"] == "MEMBER"
    assert error_of(member, INVITE, {"e": f"{unique('x')}@example.test"}).code == "forbidden"
    changes = [
        (e["payload"]["from"], e["payload"]["to"]) for e in events_of(org, "member.role_changed")
    ]
    assert changes == [("admin", "member"), ("member", "admin")]  # newest first
    # Asking for the role a member already has changes and records nothing.
    assert org.owner(CHANGE, {"m": mid, "r": "MEMBER"})["changeMemberRole"]["role"] == "MEMBER"
    assert len(events_of(org, "member.role_changed")) == 2


def test_who_may_act_on_whom(org: Org, server: ServerProcess, system_admin: Client) -> None:
    admin = org.add_member("ADMIN")
    member = org.add_member("MEMBER")
    owner_id = member_id(org, org.owner)
    member_mid = member_id(org, member)
    # Members manage nobody.
    for query, variables in (
        (REMOVE, {"m": owner_id}),
        (CHANGE, {"m": member_mid, "r": "ADMIN"}),
        (REVOKE, {"m": owner_id}),
    ):
        assert error_of(member, query, variables).code == "forbidden"
    # Admins act on members and admins, but not on owners, and make no owners.
    for query, variables in (
        (REMOVE, {"m": owner_id}),
        (CHANGE, {"m": owner_id, "r": "MEMBER"}),
        (REVOKE, {"m": owner_id}),
        (CHANGE, {"m": member_mid, "r": "OWNER"}),
    ):
        assert error_of(admin, query, variables).code == "forbidden"
    assert admin(CHANGE, {"m": member_mid, "r": "ADMIN"})["changeMemberRole"]["role"] == "ADMIN"
    # Another organization's members look like ids that exist nowhere.
    other = make_org(server.url, system_admin)
    outsider_mid = member_id(other, other.add_member("MEMBER"))
    for query, variables in (
        (REMOVE, {"m": outsider_mid}),
        (CHANGE, {"m": outsider_mid, "r": "ADMIN"}),
        (REVOKE, {"m": outsider_mid}),
    ):
        err = error_of(org.owner, query, variables)
        ghost = error_of(org.owner, query, {**variables, "m": str(uuid.uuid4())})
        assert (err.code, err.errors[0]["message"]) == ("not_found", ghost.errors[0]["message"])
    assert len(other.owner(MEMBERS)["members"]) == 2


def test_an_organization_keeps_its_last_owner(org: Org) -> None:
    owner_id = member_id(org, org.owner)
    for query, variables in ((REMOVE, {"m": owner_id}), (CHANGE, {"m": owner_id, "r": "ADMIN"})):
        assert error_of(org.owner, query, variables).code == "invalid_action"
    assert org.owner(ME)["me"]["role"] == "OWNER"
    # With a second owner, an owner may step down (at once) or leave.
    second = org.add_member("MEMBER")
    second_id = member_id(org, second)
    assert org.owner(CHANGE, {"m": second_id, "r": "OWNER"})["changeMemberRole"]["role"] == "OWNER"
    assert org.owner(CHANGE, {"m": owner_id, "r": "ADMIN"})["changeMemberRole"]["role"] == "ADMIN"
    assert org.owner(ME)["me"]["role"] == "ADMIN"
    assert error_of(second, REMOVE, {"m": second_id}).code == "invalid_action"  # now the last
    assert second(REMOVE, {"m": owner_id})["removeMember"]["sessionsEnded"] == 1
    assert error_of(org.owner, NODES, {}).code == "unauthenticated"
    assert [m["role"] for m in second(MEMBERS)["members"]] == ["OWNER"]


def test_two_owners_demoting_each_other_at_once_leave_one_owner(org: Org) -> None:
    second = org.add_member("MEMBER")
    first_id, second_id = member_id(org, org.owner), member_id(org, second)
    org.owner(CHANGE, {"m": second_id, "r": "OWNER"})

    def demote(who: Client, target: str) -> str:
        try:
            who(CHANGE, {"m": target, "r": "MEMBER"})
        except GraphQLError as err:
            return err.code
        return "ok"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(
            pool.map(lambda args: demote(*args), [(org.owner, second_id), (second, first_id)])
        )
    # The loser is refused with a typed error: the last owner (or, demoted first, no longer an
    # owner and so not allowed to act on one). Exactly one owner is left either way.
    assert outcomes in (["invalid_action", "ok"], ["forbidden", "ok"]), outcomes
    roles = sorted(m["role"] for m in org.owner(MEMBERS)["members"])
    assert roles == ["MEMBER", "OWNER"], roles
