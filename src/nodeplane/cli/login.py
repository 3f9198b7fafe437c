"""`nodeplane login`: sign in once and keep the session for the other commands."""

import sys
from typing import Annotated
from uuid import UUID

import typer

from nodeplane.cli.client import NodeplaneClient, normalize_url
from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    fail,
    out,
    print_json,
    reported_errors,
)
from nodeplane.cli.credentials import Credentials, load_credentials, save_credentials
from nodeplane.cli.errors import ApiError
from nodeplane.cli.models import Me


def login(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="NODEPLANE_URL",
            help="Control-plane URL, e.g. https://nodeplane.example.com; default: the last one.",
            show_default=False,
        ),
    ] = None,
    email: Annotated[str | None, typer.Option(help="Your email; asked for if missing.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            help="Store this API key instead of signing in with a password.", show_default=False
        ),
    ] = None,
    organization: Annotated[
        UUID | None,
        typer.Option(help="Organization id, for members of several; default: the first."),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Sign in and store the URL and session token (0600) for the other commands."""
    with reported_errors():
        chosen = url or load_credentials().url
        if not chosen:
            fail("pass --url with the control plane's address (or set NODEPLANE_URL)")
        base = normalize_url(chosen)
        with NodeplaneClient(base, token) as client:
            if token:
                me = client.me()
                if me is None:
                    raise ApiError("unauthenticated", f"the token is not valid at {base}")
                bearer = token
            else:
                session = client.login(*_email_and_password(email, password_stdin), organization)
                me, bearer = session.me, session.token
        path = save_credentials(
            Credentials(url=base, token=bearer, email=me.email, organization=_org_name(me))
        )
    if output is OutputFormat.JSON:
        print_json(
            {
                "url": base,
                "email": me.email,
                "organization": _org_name(me),
                "credentials": str(path),
            }
        )
    else:
        who = me.email or f"{me.kind} key"
        org = f" in organization {_org_name(me)}" if me.organization else ""
        out.print(f"logged in to {base} as {who}{org}; credentials saved in {path}", soft_wrap=True)


def _org_name(me: Me) -> str | None:
    return me.organization.name if me.organization else None


def _email_and_password(email: str | None, password_stdin: bool) -> tuple[str, str]:
    if password_stdin:
        if not email:
            fail("--password-stdin needs --email (stdin holds the password)")
        # Like `docker login --password-stdin`: the whole input, less the final line break.
        password = sys.stdin.read().rstrip("\r\n")
    else:
        email = email or typer.prompt("Email", err=True)
        password = typer.prompt("Password", hide_input=True, err=True)
    if not password:
        fail("empty password")
    return email, password
