"""The UI's Jinja environment: every template autoescaped, its filters, and the CSRF token."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).parent / "templates"


def ago(value: str | None) -> str:
    """'12 s ago', '3 min ago' ... for an ISO timestamp from the API."""
    if not value:
        return "never"
    seconds = max(0, int((datetime.now(UTC) - datetime.fromisoformat(value)).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def when(value: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    if not value:
        return "—"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _csrf_context(request: Request) -> dict[str, Any]:
    # Set by the security middleware on every request; a form rendered without it is refused.
    return {"csrf_token": getattr(request.state, "csrf_token", "")}


def _environment() -> Environment:
    # Autoescape for every template whatever its name: data is escaped unless a template says
    # otherwise, and tests/web/test_templates.py refuses templates that say otherwise.
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True)
    env.filters["ago"] = ago
    env.filters["when"] = when
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
    env.filters["lower"] = lambda v: str(v).lower()
    return env


templates = Jinja2Templates(env=_environment(), context_processors=[_csrf_context])
