"""A database too busy to sign the caller in is a typed, retryable answer, not a 500."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from nodeplane.controlplane.app import create_app
from nodeplane.controlplane.config import Settings

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


async def _scenario(database: Path) -> httpx.Response:
    settings = Settings(
        database_url=f"sqlite:///{database}", admin_email=ADMIN[0], admin_password=ADMIN[1]
    )
    key = await _executor_key(settings)
    # Also how long SQLite waits for its write lock.
    async with _serving(replace(settings, request_time_budget=0.5)) as http:
        # Another program holds SQLite's write lock: the key's first use (which records when it
        # was last used) cannot be written within the budget.
        blocker = sqlite3.connect(database, isolation_level=None, timeout=0)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            response = await _gql(http, "{ __typename }", key)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        again = await _gql(http, "{ __typename }", key)
        assert again.status_code == 200 and again.json()["data"] == {"__typename": "Query"}
        return response


def test_a_busy_database_while_signing_in_is_unavailable_with_retry_after(
    tmp_path: Path,
) -> None:
    response = asyncio.run(_scenario(tmp_path / "cp.db"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "unavailable", "retryAfterSeconds": 1}
