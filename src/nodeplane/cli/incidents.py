"""`nodeplane incidents`: alert incidents of the organization (node_down, disk_usage, ...)."""

from typing import Annotated

import typer

from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
    print_error,
    print_list,
)
from nodeplane.cli.models import Incident
from nodeplane.cli.render import incidents_table

incidents_app = typer.Typer(
    help="Alert incidents: open while a rule's condition holds, resolved when it clears.",
    no_args_is_help=True,
)

PAGE_SIZE = 200


@incidents_app.command("list")
def list_incidents(
    open_only: Annotated[
        bool, typer.Option("--open", help="Only incidents still open.", show_default=False)
    ] = False,
    resolved_only: Annotated[
        bool, typer.Option("--resolved", help="Only resolved incidents.", show_default=False)
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest opened first.")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List incidents, newest opened first, paging through them up to --limit."""
    if open_only and resolved_only:
        print_error("--open and --resolved exclude each other")
        raise typer.Exit(2)
    state = "OPEN" if open_only else "RESOLVED" if resolved_only else None
    found: list[Incident] = []
    with connect(url, token) as client:
        after: str | None = None
        while len(found) < limit:
            page = client.incidents(
                state=state, first=min(limit - len(found), PAGE_SIZE), after=after
            )
            found += page.items
            if not page.has_next_page or page.end_cursor is None:
                break
            after = page.end_cursor
    empty = {"OPEN": "no open incidents", "RESOLVED": "no resolved incidents"}.get(
        state or "", "no incidents"
    )
    print_list(found[:limit], output, incidents_table, empty)
