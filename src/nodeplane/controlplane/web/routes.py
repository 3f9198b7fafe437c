"""The UI's routes: sign-in and sign-out, the pages, and the vendored static files."""

from pathlib import Path
from urllib.parse import urlparse

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from nodeplane.controlplane.api.context import SESSION_COOKIE
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError
from nodeplane.controlplane.services import accounts
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.web.live import LiveNodes, RowFilter, stream_events
from nodeplane.controlplane.web.log_stream import log_stream_endpoint
from nodeplane.controlplane.web.pages import PHASES, Pages, status_for, uuid_or_none
from nodeplane.controlplane.web.params import read_params, text_problem
from nodeplane.controlplane.web.session import current_user
from nodeplane.controlplane.web.templating import templates

STATIC_DIR = Path(__file__).parent / "static"


def _safe_next(value: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if not value:
        return "/nodes"
    parsed = urlparse(value)
    if parsed.scheme or parsed.netloc or not value.startswith("/") or value.startswith("//"):
        return "/nodes"
    # Browsers read a backslash as a slash ("/\\evil.example") and drop tabs and newlines.
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "/nodes"
    if text_problem(value, max_chars=2000):
        return "/nodes"
    return value


def web_routes(db: Database, settings: Settings) -> list[BaseRoute]:
    """Every route of the web UI."""
    pages = Pages(db, settings)
    live = LiveNodes(db, settings)

    async def home(request: Request) -> Response:
        return RedirectResponse("/nodes", status_code=303)

    async def signin(request: Request) -> Response:
        next_url = _safe_next(request.query_params.get("next"))
        if request.method == "GET":
            if await current_user(db, request) is not None:
                return RedirectResponse(next_url, status_code=303)
            return templates.TemplateResponse(
                request, "signin.html", {"next": next_url, "email": "", "error": None}
            )
        form = await request.form()
        email = str(form.get("email", ""))
        password = str(form.get("password", ""))
        next_url = _safe_next(str(form.get("next", "")) or None)
        problems = [
            f"{label} {problem}"
            for label, value, limit in (("email", email, 320), ("password", password, 1024))
            if (problem := text_problem(value, max_chars=limit))
        ]
        if problems:
            return templates.TemplateResponse(
                request,
                "signin.html",
                {"next": next_url, "email": "", "error": "; ".join(problems)},
                status_code=400,
            )
        try:
            result = await accounts.login(
                db,
                settings,
                email,
                password,
                client_address=request.client.host if request.client else None,
            )
        except DomainError as exc:
            return templates.TemplateResponse(
                request,
                "signin.html",
                {"next": next_url, "email": email, "error": exc.message},
                status_code=status_for(exc),
            )
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            result.token,
            max_age=int(settings.session_ttl_hours * 3600),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def signout(request: Request) -> Response:
        principal = await current_user(db, request)
        if principal is not None:
            async with db.write() as uow:
                await accounts.logout(uow, principal)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def nodes_stream(request: Request) -> Response:
        """The nodes page's changed rows, as Server-Sent Events (web/live.py), for the page's
        own filters; signed in by the session cookie as the page is, and scoped the same way."""
        principal = await current_user(db, request)
        if principal is None or principal.organization_id is None:
            return PlainTextResponse("sign in first", status_code=401)
        params, problems = read_params(request.query_params, ("q", "chain", "phase", "executor"))
        if problems:
            return PlainTextResponse("; ".join(problems), status_code=400)
        phase = params["phase"] if params["phase"] in PHASES else None
        row_filter = RowFilter(
            name=params["q"] or None,
            chain=params["chain"] or None,
            phase=phase.upper() if phase else None,
            executor_id=uuid_or_none(params["executor"]),
            name_ignores_case=not db.is_postgresql,
        )
        subscription = live.subscribe(principal.organization_id, row_filter)

        async def still_signed_in() -> bool:
            # A stream outlives the request that opened it: a session signed out or expired
            # since ends it at the next heartbeat.
            return await current_user(db, request) is not None

        return StreamingResponse(
            stream_events(live, subscription, still_signed_in),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return [
        Route("/", home, methods=["GET"]),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/nodes", pages.page(pages.nodes), methods=["GET"]),
        Route("/nodes/stream", nodes_stream, methods=["GET"]),
        Route("/nodes/new", pages.page(pages.deploy), methods=["GET"]),
        Route("/nodes/{node_id}", pages.page(pages.node), methods=["GET"]),
        Route("/nodes/{node_id}/logs/stream", log_stream_endpoint(db, settings), methods=["GET"]),
        Route("/executors", pages.page(pages.executors), methods=["GET"]),
        Route("/keys", pages.page(pages.api_keys), methods=["GET"]),
        Route("/events", pages.page(pages.events), methods=["GET"]),
        Route("/incidents", pages.page(pages.incidents), methods=["GET"]),
        Route("/settings/alerts", pages.page(pages.alert_settings), methods=["GET"]),
        Route("/webhooks", pages.page(pages.webhooks), methods=["GET"]),
        Route("/webhooks/deliveries", pages.page(pages.webhook_deliveries), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
