"""What a browser is told and asked: security headers on every response, and the CSRF checks on
every request that changes state with the session cookie.

- Every response carries nosniff, `X-Frame-Options: DENY`, `Referrer-Policy: same-origin`,
  COOP/CORP `same-origin` and a Content-Security-Policy: the UI's pages get one without inline
  scripts or styles (scripts come from /static only, Trusted Types guard the DOM sinks), other
  responses `default-src 'none'`. GraphiQL, served outside production only, loads its assets
  from a CDN and runs inline scripts, so that one HTML response gets a looser policy of its own.
- A form post (anything but GET/HEAD/OPTIONS outside /graphql, sign-in included) must come from
  this origin (`Sec-Fetch-Site`, else `Origin` against `Host`) and carry the CSRF token of the
  browser's `nodeplane_csrf` cookie in its `csrf_token` field (double submit, compared in
  constant time). A refusal is a 403 page that says why.
- A POST to /graphql without an `Authorization` header (so: authenticated by the session
  cookie, or signing in, which sets it) must come from this origin too. JSON bodies already
  need a CORS preflight that no origin passes; this holds should that ever change.
"""

import hmac
import re
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nodeplane.controlplane.errors import ErrorCode
from nodeplane.controlplane.request_body import replay_body
from nodeplane.controlplane.web.templating import templates

CSRF_COOKIE = "nodeplane_csrf"
CSRF_FIELD = "csrf_token"
# The sign-in form is the largest the UI posts: an email, a password of at most 1,024
# characters, a path to return to and the token.
MAX_FORM_BYTES = 16 * 1024
GRAPHQL_PATH = "/graphql"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TRUSTED_TYPES_POLICY = "nodeplane-page"

UI_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        f"trusted-types {TRUSTED_TYPES_POLICY}",
    ]
)
# GraphiQL's page (strawberry's template) pulls React and GraphiQL from unpkg (with SRI) and
# starts them from inline scripts and styles: it cannot run under UI_POLICY. It holds no data
# of ours, is never framed, and talks to this origin only.
GRAPHIQL_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline' https://unpkg.com",
        "style-src 'self' 'unsafe-inline' https://unpkg.com",
        "img-src 'self' data:",
        "font-src 'self' data: https://unpkg.com",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ]
)
# JSON, static files, plain-text errors: nothing in them may run, load or be framed.
OTHER_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

COMMON_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: under it, browsers send `Origin: null` on same-origin form posts.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
HSTS = "max-age=31536000"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def cross_origin(headers: Headers) -> bool:
    """Whether a browser sent this request from another origin.

    `Sec-Fetch-Site` decides when present (every current browser sends it to HTTPS and
    loopback origins); otherwise `Origin` must name this host. A request with neither comes
    from a client that is not a browser, which no other site can drive.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    host = headers.get("host", "")
    return origin == "null" or not host or urlsplit(origin).netloc.lower() != host.lower()


class BrowserSecurity:
    """ASGI middleware: security headers on every response, CSRF checks on unsafe requests."""

    def __init__(self, app: ASGIApp, *, production: bool) -> None:
        self.app = app
        self.production = production

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = cookie_parser(headers.get("cookie", ""))
        token = cookies.get(CSRF_COOKIE, "")
        known = bool(_TOKEN.fullmatch(token))
        if not known:
            token = secrets.token_urlsafe(32)
        # Read by the templates (templating._csrf_context) to embed in every form.
        scope.setdefault("state", {})["csrf_token"] = token
        send = self._decorate(scope, send, None if known else token)

        if scope["method"] not in SAFE_METHODS:
            if scope["path"] == GRAPHQL_PATH:
                # From another origin, a browser may only call the API with a key it was given
                # (a Bearer header), never on the strength of this site's cookie, and never to
                # sign in (login sets the session cookie: login CSRF).
                if "authorization" not in headers and cross_origin(headers):
                    await _graphql_refusal()(scope, receive, send)
                    return
            else:
                refusal, receive = await _check_form(scope, receive, headers, token, known)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _decorate(self, scope: Scope, send: Send, new_token: str | None) -> Send:
        https = scope.get("scheme") == "https"
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                html = out.get("content-type", "").startswith("text/html")
                if "content-security-policy" not in out:
                    out["content-security-policy"] = self._policy(path, html)
                for name, value in COMMON_HEADERS.items():
                    out.setdefault(name, value)
                if not path.startswith("/static/"):
                    # Pages and API answers hold an organization's data: not for any cache.
                    out.setdefault("cache-control", "no-store")
                if https:
                    out.setdefault("strict-transport-security", HSTS)
                if new_token is not None and html:
                    out.append("set-cookie", _csrf_cookie(new_token, https))
            await send(message)

        return send_with_headers

    def _policy(self, path: str, html: bool) -> str:
        if not html:
            return OTHER_POLICY
        if path == GRAPHQL_PATH and not self.production:
            return GRAPHIQL_POLICY
        return UI_POLICY


def _csrf_cookie(token: str, https: bool) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[CSRF_COOKIE] = token
    morsel = cookie[CSRF_COOKIE]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if https:
        morsel["secure"] = True
    return morsel.OutputString()


async def _check_form(
    scope: Scope, receive: Receive, headers: Headers, token: str, known: bool
) -> tuple[Response | None, Receive]:
    """A refusal for a form post that fails the CSRF checks, else None and the body replayed."""
    if cross_origin(headers):
        return _form_refusal(
            scope,
            403,
            "This form was sent from another site, so it was refused. "
            "Open nodeplane yourself and try again.",
        ), receive
    if not known:
        return _expired(scope), receive
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return _too_large(scope), receive
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return Response(status_code=400), receive
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return _too_large(scope), receive
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = ""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        sent = next((value for name, value in fields if name == CSRF_FIELD), "")
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), token.encode("ascii")):
        return _expired(scope), receive

    return None, replay_body(body, receive)


def _expired(scope: Scope) -> Response:
    return _form_refusal(
        scope,
        403,
        "This form has expired or is missing its security token, so it was refused. "
        "Reload the page and try again.",
    )


def _too_large(scope: Scope) -> Response:
    return _form_refusal(scope, 413, f"This form is larger than {MAX_FORM_BYTES} bytes.")


def _form_refusal(scope: Scope, status: int, message: str) -> Response:
    back = ("/signin", "Back to sign-in") if scope["path"] == "/signin" else ("/nodes", "Back")
    return templates.TemplateResponse(
        Request(scope),
        "refused.html",
        {"message": message, "back_href": back[0], "back_label": back[1]},
        status_code=status,
    )


def _graphql_refusal() -> Response:
    body = {
        "data": None,
        "errors": [
            {
                "message": "from another site, call the API with an Authorization header",
                "extensions": {"code": ErrorCode.FORBIDDEN.value},
            }
        ],
    }
    return JSONResponse(body, status_code=403)
