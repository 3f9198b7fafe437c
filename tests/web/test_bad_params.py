"""Pages never answer 500 to what a query string holds (finding 8: `GET /nodes?q=%00` was an
HTTP 500 on PostgreSQL, a 60 KB search one on SQLite). Unusable text (NUL, over-long values) gets
a 400 page that names the parameter and keeps the filters form; anything else a page does not
understand is ignored or refused the same way. Against a real server, SQLite and PostgreSQL."""

import re
from urllib.parse import quote

import pytest

from nodeplane.controlplane.http_server import MAX_REQUEST_HEAD_BYTES
from tests.support.fleet import LITECOIN_SPEC, FakeExecutor, Org
from tests.support.server import ServerProcess
from tests.web.forms import browser_session, form_token, raw_get, trickled_get
from tests.web.helpers import create_node

# Sent as they are: percent-escapes for NUL, a lone surrogate's UTF-8 bytes, invalid UTF-8.
UNUSABLE = {"nul": "%00", "nul-inside": "ltc%00x", "100KB": "a" * 100_000, "1025": "b" * 1025}
ODD = {
    "surrogate": "%ED%A0%80",
    "invalid-utf8": "%FF%FE",
    "markup": quote("'\"><script>x</script>&"),
    "controls": "%0A%0D%09%1B",
    "negative": "-1",
    "huge-number": "9" * 40,
    "uuid-ish": "00000000-0000-0000-0000-00000000000g",
    "repeated": "a&{name}=b",
}
PAGES = {
    "/nodes": ["q", "chain", "phase", "executor", "sort", "dir", "page", "per_page"],
    "/events": ["level", "type", "node", "after"],
    "/webhooks/deliveries": ["endpoint", "after"],
}
LABELS = {
    "q": "search",
    "dir": "direction",
    "after": "page cursor",
    "per_page": "rows per page",
}
FORM = {
    "/nodes": 'action="/nodes"',
    "/events": 'action="/events"',
    "/webhooks/deliveries": 'action="/webhooks/deliveries"',
}
OTHER_PAGES = ["/nodes/new", "/executors", "/keys", "/webhooks"]
SAMPLE = ("nul", "100KB", "surrogate", "markup")


@pytest.fixture
def node_id(org: Org, executor: FakeExecutor) -> str:
    return create_node(org, executor, "params", LITECOIN_SPEC)


def error_text(html: str) -> str:
    found = re.search(r'id="page-error">([^<]*)<', html)
    return found.group(1) if found else ""


@pytest.mark.parametrize("page", sorted(PAGES))
def test_unusable_filter_text_is_a_400_with_the_form(
    server: ServerProcess, org: Org, node_id: str, page: str
) -> None:
    cookies = {"nodeplane_session": str(org.owner.token)}
    responses = {
        f"{page}?{param}=<{case}>": raw_get(server.url, f"{page}?{param}={value}", cookies)
        for param in PAGES[page]
        for case, value in UNUSABLE.items()
    }
    errors = {where: r.text[:100] for where, r in responses.items() if r.status >= 500}
    assert not errors, errors
    for param in PAGES[page]:
        for case in UNUSABLE:
            where = f"{page}?{param}=<{case}>"
            response = responses[where]
            assert response.status == 400, (where, response.status, response.text[:300])
            assert response.headers["content-type"].startswith("text/html"), where
            message = error_text(response.text)
            assert message.startswith(f"{LABELS.get(param, param)}: "), (where, message)
            assert FORM[page] in response.text, f"{where}: the filters form is gone"
            assert "\x00" not in response.text, where


@pytest.mark.parametrize("page", sorted(PAGES))
def test_odd_filter_values_never_break_a_page(
    server: ServerProcess, org: Org, node_id: str, page: str
) -> None:
    cookies = {"nodeplane_session": str(org.owner.token)}
    for param in PAGES[page]:
        for case, value in ODD.items():
            target = f"{page}?{param}={value.format(name=param)}"
            response = raw_get(server.url, target, cookies)
            where = f"{page}?{param}=<{case}>"
            assert response.status in (200, 400), (where, response.status, response.text[:300])
            assert FORM[page] in response.text, f"{where}: the filters form is gone"
            if response.status == 400:
                assert error_text(response.text), f"{where}: a 400 without a message"
            assert "<script>x</script>" not in response.text, where
    # All of them at once.
    query = "&".join(f"{p}=%00" for p in PAGES[page])
    response = raw_get(server.url, f"{page}?{query}", cookies)
    assert response.status == 400
    assert FORM[page] in response.text


def test_pages_without_filters_ignore_the_query_string(
    server: ServerProcess, org: Org, node_id: str
) -> None:
    cookies = {"nodeplane_session": str(org.owner.token)}
    values = {k: v for k, v in {**UNUSABLE, **ODD}.items() if k in SAMPLE}
    for page in [*OTHER_PAGES, f"/nodes/{node_id}"]:
        for param in ("q", "node", "after"):
            for case, value in values.items():
                response = raw_get(server.url, f"{page}?{param}={value}", cookies)
                assert response.status == 200, (page, param, case, response.status)
    for path in ("/nodes/%00", "/nodes/%ED%A0%80", "/nodes/" + "c" * 10_000):
        response = raw_get(server.url, path, cookies)
        assert response.status == 404, (path, response.status)


def test_a_long_url_gets_the_same_answer_however_it_arrives(
    server: ServerProcess, org: Org, node_id: str
) -> None:
    """A 100 KB query string sent in small pieces (as over a slow link) reaches the page, which
    answers as it does when the bytes arrive at once: the parser's own limit once turned it into
    a bare 'Invalid HTTP request' 400 depending on how the bytes were split (a flaky CI run)."""
    cookies = {"nodeplane_session": str(org.owner.token)}
    value = UNUSABLE["100KB"]
    ignored = trickled_get(server.url, f"/nodes/new?node={value}", cookies)
    assert ignored.status == 200, (ignored.status, ignored.text[:200])
    refused = trickled_get(server.url, f"/nodes?q={value}", cookies)
    assert refused.status == 400, (refused.status, refused.text[:200])
    assert refused.headers["content-type"].startswith("text/html")
    assert error_text(refused.text).startswith("search: ")


def test_a_request_head_over_the_bound_is_refused_however_it_arrives(
    server: ServerProcess, org: Org
) -> None:
    """httptools bounds nothing itself: a head past the bound is a 400, sent at once or
    trickled, and the server goes on serving; just under it, the page answers."""
    cookies = {"nodeplane_session": str(org.owner.token)}
    over = "/nodes/new?node=" + "a" * (MAX_REQUEST_HEAD_BYTES + 1024)
    for send in (raw_get, trickled_get):
        try:
            response = send(server.url, over, cookies)
        except (ConnectionResetError, BrokenPipeError):
            continue  # refused and closed before the client had sent it all
        assert response.status == 400, (send.__name__, response.status)
    under = "/nodes/new?node=" + "a" * (MAX_REQUEST_HEAD_BYTES - 4096)
    assert raw_get(server.url, under, cookies).status == 200
    assert trickled_get(server.url, under, cookies, piece=16384).status == 200
    assert raw_get(server.url, "/healthz").status == 200


def test_the_sign_in_page_never_breaks(server: ServerProcess) -> None:
    for value in [*UNUSABLE.values(), *ODD.values()]:
        response = raw_get(server.url, f"/signin?next={value}")
        assert response.status == 200, (value[:20], response.status)
    # Form fields a database cannot store: the form again with a message, not a 500.
    with browser_session(server.url) as browser:
        for email, password in (
            ("a\x00@example.test", "password-1"),
            ("a@example.test", "pass\x00word"),
            ("x" * 400 + "@example.test", "password-1"),
        ):
            token = form_token(browser.get("/signin").text)
            response = browser.post(
                "/signin",
                data={"email": email, "password": password, "csrf_token": token},
                headers={"origin": server.url},
            )
            assert response.status_code == 400, (email[:10], response.status_code)
            assert 'id="signin-error"' in response.text
            assert 'action="/signin"' in response.text
        # A return path that is not one of ours is replaced, whatever it holds.
        for next_url in ("/\\evil.example", "/\x00", "//evil.example", "https://evil.example"):
            token = form_token(browser.get("/signin").text)
            response = browser.post(
                "/signin",
                data={
                    "email": "nobody@example.test",
                    "password": "x" * 10,
                    "next": next_url,
                    "csrf_token": token,
                },
                headers={"origin": server.url},
            )
            assert response.status_code in (401, 429), response.status_code
            assert 'name="next" value="/nodes"' in response.text, next_url
