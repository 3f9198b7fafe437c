"""`nodeplane members list|invite|role|remove|revoke-sessions` against a real control plane.

Each change is checked by what the API says afterwards: the role a member's own `me` reports,
whether their session and personal keys still work, whether they can sign in again.
"""

import uuid
from pathlib import Path

from tests.cli.conftest import Cli
from tests.support.calls import all_events
from tests.support.fleet import FakeExecutor, Org, unique
from tests.support.gql import Client

MEMBER_PASSWORD = "member-password-1"  # what `Org.add_member` signs new members up with


def email_of(client: Client) -> str:
    """The email of the account `client` is signed in as."""
    email: str = client("{ me { email } }")["me"]["email"]
    return email


def personal_key(client: Client, name: str = "script") -> str:
    """A personal API key of the member `client` is signed in as."""
    secret: str = client(
        "mutation($n: String!) { createApiKey(name: $n, kind: PERSONAL) { secret } }", {"n": name}
    )["createApiKey"]["secret"]
    return secret


def works(cli: Cli, token: str) -> bool:
    """Whether `token` is still accepted, asked through the CLI as its holder would."""
    result = cli("members", "list", "-o", "json", env={"NODEPLANE_TOKEN": token})
    if result.code != 0:
        assert "(unauthenticated)" in result.stderr, result.stderr
    return result.code == 0


def as_member(org: Org, client: Client, tmp_path: Path) -> Cli:
    """The CLI signed in as another member of `org`."""
    return Cli(org.base_url, client.token, tmp_path / unique("config"))


def test_members_list(cli: Cli, org: Org, tmp_path: Path) -> None:
    admin = org.add_member("ADMIN")
    member = org.add_member("MEMBER")

    listed = cli("members", "list", "-o", "json")
    assert listed.code == 0, listed.stderr
    api = org.owner("{ members { id email role createdAt } }")["members"]
    assert [(m["id"], m["email"], m["role"]) for m in listed.json()] == [
        (m["id"], m["email"], m["role"].lower()) for m in api
    ]
    roles = {m["email"]: m["role"] for m in listed.json()}
    assert roles[email_of(admin)] == "admin" and roles[email_of(member)] == "member"
    assert roles[email_of(org.owner)] == "owner"

    table = cli("members", "list")
    assert email_of(member) in table.stdout and "MEMBER SINCE" in table.stdout
    # Every member may read who else belongs.
    assert as_member(org, member, tmp_path)("members", "list", "-o", "json").json() == listed.json()


def test_invite_prints_a_token_that_joins(cli: Cli, org: Org) -> None:
    email = f"{unique('new')}@example.test"
    invited = cli("members", "invite", email.upper(), "--role", "admin", "-o", "json")
    assert invited.code == 0, invited.stderr
    body = invited.json()
    assert (body["email"], body["role"]) == (email, "admin")
    assert body["expiresAt"]

    joined = Client(org.base_url)(
        "mutation($t: String!, $p: String!) { acceptInvite(token: $t, password: $p) "
        "{ me { email role } } }",
        {"t": body["token"], "p": MEMBER_PASSWORD},
    )["acceptInvite"]["me"]
    assert joined == {"email": email, "role": "ADMIN"}

    again = cli("members", "invite", email)
    assert again.code == 1 and "is already a member (already_exists)" in again.stderr

    other = f"{unique('new')}@example.test"
    table = cli("members", "invite", other)
    assert table.code == 0, table.stderr
    assert f"invited {other} as member" in table.stdout
    assert "shown only now" in table.stderr
    token = table.stdout.strip().splitlines()[-1]
    assert token and " " not in token


def test_change_role(cli: Cli, org: Org) -> None:
    member = org.add_member("MEMBER")
    email = email_of(member)

    promoted = cli("members", "role", email, "admin", "-o", "json")
    assert promoted.code == 0, promoted.stderr
    assert (promoted.json()["email"], promoted.json()["role"]) == (email, "admin")
    # The change takes effect on the member's next request.
    assert member("{ me { role } }")["me"]["role"] == "ADMIN"

    same = cli("members", "role", email, "admin")
    assert same.code == 0 and f"{email} is already admin" in same.stdout

    by_id = cli("members", "role", promoted.json()["id"], "member")
    assert by_id.code == 0, by_id.stderr
    assert f"{email} is now member (was admin)" in by_id.stdout
    assert member("{ me { role } }")["me"]["role"] == "MEMBER"

    # An organization never loses its last owner.
    last_owner = cli("members", "role", email_of(org.owner), "admin")
    assert last_owner.code == 1
    assert "at least one owner" in last_owner.said and "(invalid_action)" in last_owner.said

    assert cli("members", "role", email, "owenr").code == 2


def test_remove_ends_sessions_and_personal_keys(cli: Cli, org: Org) -> None:
    admin = org.add_member("ADMIN")
    email = email_of(admin)
    script = personal_key(admin)
    host_key = admin('mutation { createApiKey(name: "host", kind: EXECUTOR) { secret } }')[
        "createApiKey"
    ]["secret"]
    host = FakeExecutor(org.base_url, host_key)
    host.sync()

    declined = cli("members", "remove", email, input="n\n")
    assert declined.code == 1
    assert f"Remove {email} (admin) from the organization?" in declined.said
    assert "not removed" in declined.said
    assert works(cli, admin.token or "") and works(cli, script)

    removed = cli("members", "remove", email.upper(), "--yes", "-o", "json")
    assert removed.code == 0, removed.stderr
    body = removed.json()
    assert body["member"]["email"] == email and body["member"]["role"] == "admin"
    assert (body["sessionsEnded"], body["apiKeysRevoked"]) == (1, 1)

    assert not works(cli, admin.token or "") and not works(cli, script)
    assert email not in {m["email"] for m in cli("members", "list", "-o", "json").json()}
    # Executor keys belong to executors, not to the person who made them.
    assert host.sync()["executor"]["id"] == host.id
    [event] = all_events(org.owner, type="member.removed")
    assert event["payload"]["email"] == email and event["payload"]["apiKeysRevoked"] == 1

    gone = cli("members", "remove", email, "--yes")
    assert gone.code == 1 and f"member '{email}' not found (not_found)" in gone.stderr


def test_remove_asks_and_keeps_the_last_owner(cli: Cli, org: Org) -> None:
    email = email_of(org.add_member("MEMBER"))
    accepted = cli("members", "remove", email, input="y\n")
    assert accepted.code == 0, accepted.stderr
    assert f"removed {email} (member): 1 session ended, 0 personal API keys revoked" in (
        accepted.stdout
    )

    myself = cli("members", "remove", email_of(org.owner), input="y\n")
    assert "This is you: you leave the organization" in myself.said
    assert myself.code == 1
    assert "at least one owner" in myself.said and "(invalid_action)" in myself.said
    assert works(cli, org.owner.token or "")


def test_revoke_sessions_keeps_the_member(cli: Cli, org: Org) -> None:
    member = org.add_member("MEMBER")
    email = email_of(member)
    script = personal_key(member)

    unanswered = cli("members", "revoke-sessions", email)
    assert unanswered.code == 1 and "nothing revoked" in unanswered.said
    assert "They can sign in again; their keys are gone for good." in unanswered.said
    assert works(cli, member.token or "")

    revoked = cli("members", "revoke-sessions", email, "--yes", "-o", "json")
    assert revoked.code == 0, revoked.stderr
    body = revoked.json()
    assert (body["member"]["email"], body["sessionsEnded"], body["apiKeysRevoked"]) == (
        email,
        1,
        1,
    )
    assert not works(cli, member.token or "") and not works(cli, script)
    assert email in {m["email"] for m in cli("members", "list", "-o", "json").json()}

    # Still a member: they sign in again.
    login = Client(org.base_url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": email, "p": MEMBER_PASSWORD},
    )
    assert works(cli, login["login"]["token"])

    table = cli("members", "revoke-sessions", email, "--yes")
    assert f"signed out {email} (member): 1 session ended, 0 personal API keys revoked" in (
        table.stdout
    )


def test_refusals(cli: Cli, org: Org, tmp_path: Path) -> None:
    member = org.add_member("MEMBER")
    admin = org.add_member("ADMIN")
    owner_email = email_of(org.owner)
    as_plain_member = as_member(org, member, tmp_path)
    as_admin = as_member(org, admin, tmp_path)

    # A member reads but changes nothing; an admin cannot act on owners or make owners.
    for runner, args in (
        (as_plain_member, ("members", "invite", f"{unique('x')}@example.test")),
        (as_plain_member, ("members", "role", email_of(admin), "member")),
        (as_plain_member, ("members", "remove", email_of(admin), "--yes")),
        (as_plain_member, ("members", "revoke-sessions", email_of(admin), "--yes")),
        (as_admin, ("members", "invite", f"{unique('x')}@example.test", "--role", "owner")),
        (as_admin, ("members", "role", email_of(member), "owner")),
        (as_admin, ("members", "role", owner_email, "member")),
        (as_admin, ("members", "remove", owner_email, "--yes")),
        (as_admin, ("members", "revoke-sessions", owner_email, "--yes")),
    ):
        result = runner(*args, "-o", "json")
        assert result.code == 1, args
        assert result.stdout == "" and "(forbidden)" in result.stderr, (args, result.stderr)
    assert {m["email"]: m["role"] for m in cli("members", "list", "-o", "json").json()} == {
        owner_email: "owner",
        email_of(admin): "admin",
        email_of(member): "member",
    }
    assert works(cli, admin.token or "") and works(cli, member.token or "")

    for args in (
        ("members", "remove", "nobody@example.test", "--yes"),
        ("members", "role", str(uuid.uuid4()), "admin"),
        ("members", "revoke-sessions", "nobody@example.test", "--yes"),
    ):
        result = cli(*args)
        assert result.code == 1, args
        assert "not found (not_found)" in result.stderr, result.stderr

    invalid = cli("members", "invite", "not-an-email")
    assert invalid.code == 1 and "(invalid_input)" in invalid.stderr
