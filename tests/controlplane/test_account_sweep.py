"""Finding 11 of issue 7, "login-throttle rows and expired sessions are never cleaned up",
against a real server on SQLite and PostgreSQL: the periodic sweep deletes expired sessions,
invites used or expired past their retention, stale throttle rows and long-unused sign-in
addresses, and nothing that is still live. Rows are aged by hand in the database, since waiting
days is not an option; the server's own sweep does the deleting (tests/support/server.py runs it
every second)."""

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Connection, func, insert, select, update

from nodeplane.controlplane.store import models
from tests.support.addresses import AddressedClient, fresh_loopback_address
from tests.support.db import connect
from tests.support.fleet import Org, unique
from tests.support.gql import Client
from tests.support.server import ServerProcess

ME = "{ me { id email } }"
INVITE = "mutation($e: String!) { inviteMember(email: $e, role: MEMBER) { token } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
MEMBER_PASSWORD = "member-password-1"
TABLES = models.Base.metadata.tables


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


def count(conn: Connection, table: str, *where: ColumnElement[bool]) -> int:
    t = TABLES[table]
    return int(conn.execute(select(func.count()).select_from(t).where(*where)).scalar_one())


def test_expired_sessions_and_old_invites_are_deleted(org: Org, server: ServerProcess) -> None:
    now = datetime.now(UTC)
    user_id = uuid.UUID(org.owner(ME)["me"]["id"])
    sessions, invites = TABLES["sessions"], TABLES["invites"]
    expired_session = uuid.uuid4()
    tokens = {
        key: org.owner(INVITE, {"e": f"{unique(key)}@example.test"})["inviteMember"]["token"]
        for key in ("used-long-ago", "expired-long-ago", "expired-lately", "pending")
    }
    Client(server.url)(
        "mutation($t: String!) { acceptInvite(token: $t, password: $t) { token } }",
        {"t": tokens["used-long-ago"]},
    )
    org_id = uuid.UUID(org.id)
    with connect(server.database_url) as conn:
        conn.execute(
            insert(sessions).values(
                id=expired_session,
                user_id=user_id,
                organization_id=org_id,
                token_hash=uuid.uuid4().hex * 2,
                created_at=now - timedelta(days=8),
                expires_at=now - timedelta(days=1),
            )
        )
        invite_ids = {
            key: conn.execute(
                select(invites.c.id).where(
                    invites.c.organization_id == org_id, invites.c.email.startswith(key)
                )
            ).scalar_one()
            for key in tokens
        }
        conn.execute(
            update(invites)
            .where(invites.c.id == invite_ids["used-long-ago"])
            .values(accepted_at=now - timedelta(days=31))
        )
        conn.execute(
            update(invites)
            .where(invites.c.id == invite_ids["expired-long-ago"])
            .values(expires_at=now - timedelta(days=31))
        )
        conn.execute(
            update(invites)
            .where(invites.c.id == invite_ids["expired-lately"])
            .values(expires_at=now - timedelta(days=2))
        )
        conn.commit()

    def swept() -> bool:
        with connect(server.database_url) as conn:
            return (
                count(conn, "sessions", sessions.c.id == expired_session) == 0
                and count(conn, "invites", invites.c.id == invite_ids["used-long-ago"]) == 0
                and count(conn, "invites", invites.c.id == invite_ids["expired-long-ago"]) == 0
            )

    assert wait_until(swept), "expired sessions and old invites were never deleted"
    with connect(server.database_url) as conn:
        for key in ("expired-lately", "pending"):
            assert count(conn, "invites", invites.c.id == invite_ids[key]) == 1, key
        assert count(conn, "sessions", sessions.c.user_id == user_id) >= 1
    assert org.owner(ME)["me"]["id"] == str(user_id)  # the live session still works


def test_stale_throttle_rows_and_old_sign_in_addresses_are_deleted(
    org: Org, server: ServerProcess
) -> None:
    member = org.add_member("MEMBER")
    email = member(ME)["me"]["email"]
    user_id = uuid.UUID(member(ME)["me"]["id"])
    old, recent = fresh_loopback_address(), fresh_loopback_address()
    for address in (old, recent):
        client = AddressedClient(server.url, address)
        client.raw(LOGIN, {"e": email, "p": "wrong-password"})
        client(LOGIN, {"e": email, "p": MEMBER_PASSWORD})
        client.raw(LOGIN, {"e": email, "p": "wrong-password"})
    throttle, addresses = TABLES["sign_in_throttle"], TABLES["sign_in_addresses"]

    def rows_of(address: str) -> ColumnElement[bool]:
        return throttle.c.key.in_([address, f"{email} {address}"])

    now = datetime.now(UTC)
    with connect(server.database_url) as conn:
        assert count(conn, "sign_in_throttle", rows_of(old)) == 2
        conn.execute(
            update(throttle).where(rows_of(old)).values(last_failure_at=now - timedelta(hours=2))
        )
        conn.execute(
            update(addresses)
            .where(addresses.c.user_id == user_id, addresses.c.address == old)
            .values(last_success_at=now - timedelta(days=91))
        )
        conn.commit()

    def swept() -> bool:
        with connect(server.database_url) as conn:
            return (
                count(conn, "sign_in_throttle", rows_of(old)) == 0
                and count(conn, "sign_in_addresses", addresses.c.address == old) == 0
            )

    assert wait_until(swept), "stale throttle rows and addresses were never deleted"
    with connect(server.database_url) as conn:
        assert count(conn, "sign_in_throttle", rows_of(recent)) == 2
        assert count(conn, "sign_in_addresses", addresses.c.address == recent) == 1
