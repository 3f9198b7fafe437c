"""A served request leaves nothing for the cyclic garbage collector (controlplane/gc_policy.py).

The server decides when full collections run, on the grounds that reference counting frees what
a request made. A reference cycle through the request would keep it all alive until a full
collection, and under load those passes stalled the event loop for 100 ms and more.
"""

import asyncio
import gc
from pathlib import Path
from typing import Any

import httpx

from nodeplane.controlplane.api.context import Context
from nodeplane.controlplane.app import create_app
from nodeplane.controlplane.config import Settings


def _starlette(app: Any) -> Any:
    while not hasattr(app, "router"):
        app = getattr(app, "app", None) or app._app
    return app


def _alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def _requests_then_count(database: Path, documents: list[str]) -> tuple[int, int]:
    settings = Settings(database_url=f"sqlite:///{database}", admin_email="a@example.test")
    app = create_app(settings)
    starlette = _starlette(app)
    async with (
        starlette.router.lifespan_context(starlette),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cp") as http,
    ):
        for document in documents:  # warm every cache the documents touch
            await http.post("/graphql", json={"query": document})
        gc.collect()
        before = _alive(Context)
        gc.disable()
        try:
            for _ in range(5):
                for document in documents:
                    response = await http.post("/graphql", json={"query": document})
                    assert response.status_code == 200, response.text
            after = _alive(Context)
        finally:
            gc.enable()
    return before, after


def test_graphql_requests_are_freed_by_reference_counting(tmp_path: Path) -> None:
    documents = [
        "{ __typename }",
        # A refused call (no caller) and a failing one go through the error paths.
        "query { nodes { edges { node { id } } } }",
        "query { nosuchfield }",
    ]
    before, after = asyncio.run(_requests_then_count(tmp_path / "cp.db", documents))
    assert after == before == 0
