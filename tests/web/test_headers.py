"""Finding 9, headers: every response of a real server (SQLite and PostgreSQL) carries a strict
Content-Security-Policy, X-Frame-Options, nosniff, a Referrer-Policy and COOP/CORP; the UI's
pages get a policy without inline scripts or styles; GraphiQL (outside production only) gets
its own."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fleet import FakeExecutor, Org
from tests.support.server import ServerProcess
from tests.web.forms import FOREIGN_ORIGIN, browser_session

UI_PAGES = [
    "/nodes",
    "/nodes/new",
    "/executors",
    "/keys",
    "/events",
    "/webhooks",
    "/webhooks/deliveries",
]
COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
UI_POLICY = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "form-action": ["'self'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
    "frame-ancestors": ["'none'"],
    "require-trusted-types-for": ["'script'"],
    "trusted-types": ["nodeplane-page"],
}
LOOSE_SOURCES = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "http:", "https:"}


def directives(response: httpx.Response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy, directive by directive."""
    policy = response.headers.get("content-security-policy")
    assert policy, f"{response.request.url}: no Content-Security-Policy"
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"directive {name} twice"
        parsed[name] = sources
    return parsed


def check_common(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, (
            f"{where}: {name} is {response.headers.get(name)!r}"
        )
    policy = directives(response)
    assert policy.get("frame-ancestors") == ["'none'"], where
    assert policy.get("default-src") == ["'none'"], where
    loose = {s for sources in policy.values() for s in sources} & LOOSE_SOURCES
    assert not loose, f"{where}: {loose}"


def check_ui_page(response: httpx.Response) -> None:
    check_common(response)
    assert response.headers["content-type"].startswith("text/html")
    assert directives(response) == UI_POLICY
    assert response.headers.get("cache-control") == "no-store"


@pytest.fixture
def node_id(org: Org, executor: FakeExecutor) -> str:
    created = org.owner(
        "mutation($i: CreateNodeInput!) { createNode(input: $i) { id } }",
        {
            "i": {
                "executorId": executor.id,
                "name": "headers",
                "spec": {
                    "chain": "litecoin",
                    "network": "regtest",
                    "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
                },
            }
        },
    )
    value: str = created["createNode"]["id"]
    return value


def test_every_page_and_file_carries_the_headers(
    server: ServerProcess, org: Org, node_id: str
) -> None:
    assert org.owner.token is not None
    with browser_session(server.url, org.owner.token) as browser:
        for path in [*UI_PAGES, f"/nodes/{node_id}", "/events?type=node.created"]:
            response = browser.get(path)
            assert response.status_code == 200, path
            check_ui_page(response)
        # Error pages of the UI are pages too.
        for path, status in (
            (f"/nodes/{uuid.uuid4()}", 404),
            ("/nodes/not-a-uuid", 404),
            ("/nodes?q=%00", 400),
        ):
            response = browser.get(path)
            assert response.status_code == status, path
            check_ui_page(response)
        response = browser.post("/signout", headers={"origin": FOREIGN_ORIGIN})
        assert response.status_code == 403
        check_ui_page(response)
        # Redirects, static files, the API, health and unknown paths.
        for method, path, status in (
            ("GET", "/", 303),
            ("GET", "/static/app.js", 200),
            ("GET", "/static/app.css", 200),
            ("GET", "/static/no-such-file.js", 404),
            ("GET", "/healthz", 200),
            ("GET", "/no-such-page", 404),
        ):
            response = browser.request(method, path)
            assert response.status_code == status, path
            check_common(response)
        assert browser.get("/static/app.js").headers["content-type"].startswith("text/javascript")

    anonymous = httpx.get(f"{server.url}/nodes", follow_redirects=False)
    assert anonymous.status_code == 303
    check_common(anonymous)
    signin = httpx.get(f"{server.url}/signin")
    check_ui_page(signin)
    api = httpx.post(
        f"{server.url}/graphql",
        json={"query": "{ me { email } }"},
        headers={"authorization": f"Bearer {org.owner.token}"},
    )
    assert api.status_code == 200
    check_common(api)
    assert api.headers.get("cache-control") == "no-store"
    for refused in (
        httpx.post(f"{server.url}/graphql", content=b"{", headers={"content-type": "text/plain"}),
        httpx.post(f"{server.url}/graphql", json={"query": "{"}),
    ):
        assert refused.headers["content-type"].startswith("application/json")
        check_common(refused)


def test_graphiql_gets_its_own_policy_outside_production(server: ServerProcess) -> None:
    """GraphiQL loads React and GraphiQL from unpkg and starts them inline: a looser policy on
    that one HTML response, still never framed and talking to this origin only."""
    response = httpx.get(f"{server.url}/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
    for name, value in COMMON.items():
        assert response.headers.get(name) == value
    policy = directives(response)
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'", "'unsafe-inline'", "https://unpkg.com"]
    assert "'unsafe-eval'" not in {s for sources in policy.values() for s in sources}


@pytest.fixture(scope="module")
def production_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir: Path = tmp_path_factory.mktemp("production-server")
    proc = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}",
        workdir=workdir,
        extra_env={"NODEPLANE_ENV": "production"},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.server
def test_production_serves_no_graphiql(production_server: ServerProcess) -> None:
    response = httpx.get(f"{production_server.url}/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in response.text.lower()
    check_common(response)
    assert not response.headers.get("content-type", "").startswith("text/html")
    check_ui_page(httpx.get(f"{production_server.url}/signin"))


def test_https_adds_hsts_and_secure_cookies(server: ServerProcess) -> None:
    """Behind a TLS proxy on this host (uvicorn trusts X-Forwarded-Proto from loopback)."""
    response = httpx.get(f"{server.url}/signin", headers={"x-forwarded-proto": "https"})
    assert response.headers.get("strict-transport-security") == "max-age=31536000"
    csrf = [c for c in response.headers.get_list("set-cookie") if c.startswith("nodeplane_csrf=")]
    assert len(csrf) == 1 and "Secure" in csrf[0] and "HttpOnly" in csrf[0], csrf
    plain = httpx.get(f"{server.url}/signin")
    assert "strict-transport-security" not in plain.headers
