"""Helpers shared by the browser tests: protocol-level executors usable next to Playwright's sync
API, and signing a browser in with a session token."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from playwright.sync_api import Page

from nodeplane.controlplane.api.context import SESSION_COOKIE
from tests.support.fleet import CREATE_NODE, FakeExecutor, Org
from tests.support.gql import Client


class ThreadedFakeExecutor(FakeExecutor):
    """`FakeExecutor` whose calls run on a worker thread: Playwright's sync API keeps an event
    loop running on the test's thread, where `asyncio.run` is refused."""

    def _run(self, coro_fn: Any) -> Any:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(FakeExecutor._run, self, coro_fn).result()


def fake_executor(org: Org, prefix: str) -> FakeExecutor:
    """A connected protocol-level executor of `org` named `<prefix>-<hex>`."""
    executor = ThreadedFakeExecutor(
        org.base_url, org.executor_key(prefix), name=f"{prefix}-{short_hex()}"
    )
    executor.sync()
    assert executor.id is not None
    return executor


def short_hex() -> str:
    """Six random hex digits, for names unique within a test server."""
    return uuid.uuid4().hex[:6]


def sign_in_as(page: Page, base: str, client: Client) -> None:
    """Sign the browser in with `client`'s session token (the form is covered by test_ui)."""
    assert client.token is not None
    page.context.add_cookies([{"name": SESSION_COOKIE, "value": client.token, "url": base}])


def create_node(org: Org, executor: FakeExecutor, name: str, spec: dict[str, Any]) -> str:
    """Deploy a node on `executor` through the API as the owner; its id."""
    node = org.owner(
        CREATE_NODE, {"input": {"executorId": executor.id, "name": name, "spec": spec}}
    )["createNode"]
    node_id: str = node["id"]
    return node_id
