"""A database that fails while signing the caller in is a typed, retryable answer, not a 500."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from nodeplane.controlplane.app import create_app
from nodeplane.controlplane.config import Settings
from tests.support.server import PG_ADMIN_URL, create_pg_database, drop_pg_database

ADMIN = ("admin@example.test", "admin-password-1")


def _starlette(app: Any) -> Any:
    while not hasattr(app, "router"):
        app = getattr(app, "app", None) or app._app
    return app


async def _gql(
    http: httpx.AsyncClient, query: str, token: str | None = None, **variables: Any
) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    http.cookies.clear()  # sign-ins set a session cookie; each call here names its caller
    return response


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    starlette = _starlette(app)
    async with (
        starlette.router.lifespan_context(starlette),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cp") as http,
    ):
        yield http


async def _executor_key(settings: Settings) -> str:
    """An organization and an executor key, made with the default request budget (password
    hashing alone can take longer than the short budget below on a loaded machine)."""
    async with _serving(settings) as http:
        login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
        admin = (await _gql(http, login, e=ADMIN[0], p=ADMIN[1])).json()["data"]["login"]["token"]
        made = (
            await _gql(
                http,
                'mutation { createOrganization(name: "busy", ownerEmail: "o@example.test") '
                "{ inviteToken } }",
                admin,
            )
        ).json()["data"]["createOrganization"]
        accept = 'mutation($t: String!) { acceptInvite(token: $t, password: "owner-password-1") { token } }'
        accepted = (await _gql(http, accept, t=made["inviteToken"])).json()
        assert accepted.get("data"), accepted
        owner = accepted["data"]["acceptInvite"]
        key: str = (
            await _gql(
                http,
                'mutation { createApiKey(name: "k", kind: EXECUTOR) { secret } }',
                owner["token"],
            )
        ).json()["data"]["createApiKey"]["secret"]
        return key


def _refuse_connections(url: str, refuse: bool) -> None:
    """Close every connection to the database at `url` and refuse new ones, or allow them."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"false" if refuse else "true"}'
        )
        if refuse:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def _scenario(url: str) -> httpx.Response:
    settings = Settings(database_url=url, admin_email=ADMIN[0], admin_password=ADMIN[1])
    key = await _executor_key(settings)
    async with _serving(settings) as http:
        assert (await _gql(http, "{ __typename }", key)).status_code == 200
        # The database goes away between two calls: signing the next caller in (reading its
        # key) fails at the database, before any GraphQL runs.
        await asyncio.to_thread(_refuse_connections, url, True)
        try:
            response = await _gql(http, "{ __typename }", key)
        finally:
            await asyncio.to_thread(_refuse_connections, url, False)
        again = await _gql(http, "{ __typename }", key)
        assert again.status_code == 200 and again.json()["data"] == {"__typename": "Query"}
        return response


@pytest.mark.server  # a PostgreSQL database of its own
def test_a_database_lost_while_signing_in_is_unavailable_with_retry_after() -> None:
    url = create_pg_database()
    try:
        response = asyncio.run(_scenario(url))
    finally:
        drop_pg_database(url)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "unavailable", "retryAfterSeconds": 1}


def test_another_writer_holding_sqlite_does_not_stop_sign_in(tmp_path: Path) -> None:
    """Signing in only reads (a key's lastUsedAt is written behind, store/seen_times.py), so a
    program holding SQLite's write lock does not make callers wait for it."""

    async def scenario() -> httpx.Response:
        database = tmp_path / "cp.db"
        settings = Settings(
            database_url=f"sqlite:///{database}", admin_email=ADMIN[0], admin_password=ADMIN[1]
        )
        key = await _executor_key(settings)
        async with _serving(replace(settings, request_time_budget=0.5)) as http:
            blocker = sqlite3.connect(database, isolation_level=None, timeout=0)
            try:
                blocker.execute("BEGIN IMMEDIATE")
                return await _gql(http, "{ __typename }", key)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()

    response = asyncio.run(scenario())
    assert response.status_code == 200 and response.json()["data"] == {"__typename": "Query"}
