"""Finding 9, CSRF: every form post (sign-in and sign-out included) must come from this origin and
carry the browser's CSRF token; a cookie-authenticated GraphQL call must come from this origin.
Against a real server on SQLite and PostgreSQL, over HTTP and in Chromium."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from nodeplane.controlplane.api.context import SESSION_COOKIE
from tests.support.fleet import Org
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess
from tests.web.forms import (
    CSRF_COOKIE,
    FOREIGN_ORIGIN,
    browser_session,
    form_token,
    sets_cookie,
)

OWNER_PASSWORD = "owner-password-1"  # what tests.support.fleet.make_org gives every owner
ME = "{ me { email } }"
CREATE_KEY = "mutation($n: String!) { createApiKey(name: $n, kind: PERSONAL) { secret } }"
KEY_NAMES = "{ apiKeys { name } }"


def email_of(client: Client) -> str:
    email: str = client(ME)["me"]["email"]
    return email


def signed_in(client: Client) -> bool:
    """Whether `client`'s session token still signs in."""
    try:
        return client(ME)["me"] is not None
    except GraphQLError as exc:
        assert exc.code == "unauthenticated", exc
        return False


def assert_refusal_page(response: httpx.Response, status: int = 403) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="refused"' in response.text
    assert not sets_cookie(response, SESSION_COOKIE)


def test_cross_site_sign_in_is_refused(server: ServerProcess, org: Org) -> None:
    """Login CSRF: another site's page posts its owner's credentials to /signin, to sign the
    visitor in as the attacker. It has no token (it cannot read the visitor's) and a foreign
    Origin; the server signs nobody in."""
    attacker = {"email": email_of(org.owner), "password": OWNER_PASSWORD, "next": "/nodes"}
    cases: list[dict[str, str]] = [
        {"origin": FOREIGN_ORIGIN},
        {"origin": "null"},  # a sandboxed frame or a data: URL
        {"sec-fetch-site": "cross-site", "origin": FOREIGN_ORIGIN},
        {"sec-fetch-site": "same-site", "origin": "http://other.127.0.0.1.nip.io"},
    ]
    for headers in cases:
        with browser_session(server.url) as browser:
            response = browser.post("/signin", data=attacker, headers=headers)
            assert_refusal_page(response)
            assert "another site" in response.text, headers
            assert SESSION_COOKIE not in browser.cookies

    # Even holding a token pair of its own (its CSRF cookie and the matching field), a
    # cross-site post is refused: the token alone is not the check.
    with browser_session(server.url) as browser:
        token = form_token(browser.get("/signin").text)
        response = browser.post(
            "/signin",
            data={**attacker, "csrf_token": token},
            headers={"origin": FOREIGN_ORIGIN, "sec-fetch-site": "cross-site"},
        )
        assert_refusal_page(response)


def test_sign_in_needs_the_form_token(server: ServerProcess, org: Org) -> None:
    credentials = {"email": email_of(org.owner), "password": OWNER_PASSWORD, "next": "/keys"}
    same_origin = {"origin": server.url, "sec-fetch-site": "same-origin"}
    with browser_session(server.url) as browser:
        page = browser.get("/signin")
        assert page.status_code == 200
        assert sets_cookie(page, CSRF_COOKIE)
        token = form_token(page.text)
        assert token == browser.cookies[CSRF_COOKIE]

        for data in (
            credentials,  # no token
            {**credentials, "csrf_token": ""},
            {**credentials, "csrf_token": "x" * len(token)},
            {**credentials, "csrf_token": token[:-1]},
        ):
            response = browser.post("/signin", data=data, headers=same_origin)
            assert_refusal_page(response)
            assert "expired" in response.text
            assert SESSION_COOKIE not in browser.cookies

        # A JSON or multipart body carries no form token.
        response = browser.post(
            "/signin", json={**credentials, "csrf_token": token}, headers=same_origin
        )
        assert_refusal_page(response)

        # The form as the page rendered it: signed in, sent where `next` says.
        response = browser.post(
            "/signin", data={**credentials, "csrf_token": token}, headers=same_origin
        )
        assert response.status_code == 303, response.text[:300]
        assert response.headers["location"] == "/keys"
        assert sets_cookie(response, SESSION_COOKIE)
        assert signed_in(Client(server.url, browser.cookies[SESSION_COOKIE]))

    # The token of one browser does not work from another (its cookie differs or is absent).
    with browser_session(server.url) as other:
        response = other.post(
            "/signin", data={**credentials, "csrf_token": token}, headers=same_origin
        )
        assert_refusal_page(response)
        other.get("/signin")
        response = other.post(
            "/signin", data={**credentials, "csrf_token": token}, headers=same_origin
        )
        assert_refusal_page(response)


def test_a_non_browser_client_signs_in_with_the_token(server: ServerProcess, org: Org) -> None:
    """Scripts that send neither Origin nor Sec-Fetch-Site (no other site can make a browser do
    that) still need the page's token, and sign in with it."""
    with browser_session(server.url) as client:
        token = form_token(client.get("/signin").text)
        response = client.post(
            "/signin",
            data={"email": email_of(org.owner), "password": OWNER_PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 303
        assert sets_cookie(response, SESSION_COOKIE)


def test_cross_site_sign_out_is_refused(server: ServerProcess, org: Org) -> None:
    member = org.add_member("MEMBER")
    assert member.token is not None
    with browser_session(server.url, member.token) as browser:
        # Another site's form: no token, a foreign origin.
        response = browser.post("/signout", headers={"origin": FOREIGN_ORIGIN})
        assert signed_in(member), "another site's form ended the session"
        assert_refusal_page(response)
        page = browser.get("/nodes")
        assert page.status_code == 200
        token = form_token(page.text)
        response = browser.post(
            "/signout", data={"csrf_token": token}, headers={"origin": FOREIGN_ORIGIN}
        )
        assert_refusal_page(response)
        response = browser.post(
            "/signout", data={}, headers={"origin": server.url, "sec-fetch-site": "same-origin"}
        )
        assert_refusal_page(response)
        assert signed_in(member), "a refused sign-out ended the session"

        # The page's own sign-out button: the session ends.
        response = browser.post(
            "/signout",
            data={"csrf_token": token},
            headers={"origin": server.url, "sec-fetch-site": "same-origin"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"
        assert not signed_in(member)


def test_oversized_form_is_refused_not_parsed(server: ServerProcess) -> None:
    with browser_session(server.url) as browser:
        token = form_token(browser.get("/signin").text)
        response = browser.post(
            "/signin",
            data={"email": "a@example.test", "password": "p" * 20_000, "csrf_token": token},
            headers={"origin": server.url},
        )
        assert_refusal_page(response, status=413)


def test_other_unsafe_methods_on_pages_need_the_token(server: ServerProcess, org: Org) -> None:
    assert org.owner.token is not None
    with browser_session(server.url, org.owner.token) as browser:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = browser.request(method, "/nodes", headers={"origin": FOREIGN_ORIGIN})
            assert_refusal_page(response)


def test_graphql_from_another_origin_needs_an_authorization_header(
    server: ServerProcess, org: Org
) -> None:
    """The UI's scripts call /graphql with the session cookie; another origin cannot, even if a
    browser let its request through (JSON bodies need a CORS preflight that nothing passes)."""
    # A call with the session cookie from another origin, as a page there would make it.
    assert org.owner.token is not None
    body = {"query": CREATE_KEY, "variables": {"n": "csrf-minted"}}
    with browser_session(server.url, org.owner.token) as browser:
        for headers in (
            {"origin": FOREIGN_ORIGIN},
            {"origin": "null"},
            {"sec-fetch-site": "cross-site", "origin": FOREIGN_ORIGIN},
            {"sec-fetch-site": "same-site"},
        ):
            response = browser.post("/graphql", json=body, headers=headers)
            assert response.status_code == 403, (headers, response.text)
            assert response.json()["errors"][0]["extensions"]["code"] == "forbidden"
        names = [k["name"] for k in org.owner(KEY_NAMES)["apiKeys"]]
        assert "csrf-minted" not in names

    # Nor can another site sign the browser in through the API's login (it sets the cookie).
    with browser_session(server.url) as browser:
        login = {
            "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            "variables": {"e": email_of(org.owner), "p": OWNER_PASSWORD},
        }
        response = browser.post("/graphql", json=login, headers={"origin": FOREIGN_ORIGIN})
        assert response.status_code == 403
        assert not sets_cookie(response, SESSION_COOKIE)

    with browser_session(server.url, org.owner.token) as browser:
        # The UI's own calls (same origin), and API clients with a Bearer key from anywhere.
        response = browser.post(
            "/graphql", json={"query": ME}, headers={"sec-fetch-site": "same-origin"}
        )
        assert response.status_code == 200
        assert response.json()["data"]["me"]["email"] == email_of(org.owner)
        response = browser.post("/graphql", json={"query": ME}, headers={"origin": server.url})
        assert response.json()["data"]["me"] is not None
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": ME},
        headers={"authorization": f"Bearer {org.owner.token}", "origin": FOREIGN_ORIGIN},
    )
    assert response.status_code == 200
    assert response.json()["data"]["me"] is not None


# ---------- in Chromium ----------


class _AttackerSite(BaseHTTPRequestHandler):
    """Serves one page that posts a sign-in form to the control plane as soon as it loads."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker_site(server: ServerProcess, org: Org) -> Iterator[str]:
    """A page on another origin (localhost, not 127.0.0.1) that signs its visitor in to the
    control plane as the attacker (this organization's owner)."""
    page = f"""<!doctype html><title>free coins</title>
<form id="f" method="post" action="{server.url}/signin">
  <input name="email" value="{email_of(org.owner)}">
  <input name="password" value="{OWNER_PASSWORD}">
  <input name="next" value="/nodes">
</form>
<script>document.getElementById("f").submit();</script>"""
    handler = type("Handler", (_AttackerSite,), {"page": page.encode()})
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{site.server_address[1]}/"
    finally:
        site.shutdown()
        site.server_close()


def test_login_csrf_from_another_site_in_chromium(
    page: Page, server: ServerProcess, attacker_site: str
) -> None:
    base = server.url
    page.goto(attacker_site)
    page.wait_for_url(f"{base}/**")
    assert not [c for c in page.context.cookies(base) if c["name"] == SESSION_COOKIE], (
        "the other site's form signed the browser in"
    )
    expect(page.locator("#refused")).to_contain_text("another site")
    page.goto(f"{base}/nodes")
    expect(page).to_have_url(f"{base}/signin?next=%2Fnodes")


def test_the_sign_in_form_works_in_chromium(page: Page, server: ServerProcess, org: Org) -> None:
    base = server.url
    page.goto(f"{base}/keys")
    expect(page).to_have_url(f"{base}/signin?next=%2Fkeys")
    page.get_by_label("Email").fill(email_of(org.owner))
    page.get_by_label("Password").fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/keys")
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/signin")
    page.goto(f"{base}/keys")
    expect(page).to_have_url(f"{base}/signin?next=%2Fkeys")
