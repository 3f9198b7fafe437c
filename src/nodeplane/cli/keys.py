"""`nodeplane keys`: personal and executor API keys."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape

from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
    err,
    out,
    print_json,
    print_list,
)
from nodeplane.cli.lookup import find_executor, find_key
from nodeplane.cli.render import keys_table

keys_app = typer.Typer(help="API keys for scripts (personal) and executors.", no_args_is_help=True)


class KeyKind(StrEnum):
    """What a key is for."""

    PERSONAL = "personal"
    EXECUTOR = "executor"


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name to recognize the key by.")],
    kind: Annotated[
        KeyKind, typer.Option(help="personal: acts as you; executor: connects an agent.")
    ] = KeyKind.PERSONAL,
    expires_at: Annotated[
        datetime | None,
        typer.Option(help="When the key stops working (ISO 8601, UTC); default: never."),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            "-e",
            help="Bind the executor key to this existing executor (name or id), to reinstall "
            "a host or rotate its key.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create an API key; its secret is printed this once and cannot be shown again."""
    if executor is not None and kind is not KeyKind.EXECUTOR:
        raise typer.BadParameter(
            "binds an executor key: add --kind executor", param_hint="--executor"
        )
    expires = expires_at.isoformat() if expires_at else None
    if expires_at is not None and expires_at.tzinfo is None:
        expires = expires_at.isoformat() + "Z"  # a bare time is read as UTC, as the help says
    with connect(url, token) as client:
        bound_to = find_executor(client, executor) if executor else None
        created = client.create_api_key(
            name, kind.value, expires, bound_to.id if bound_to else None
        )
    if output is OutputFormat.JSON:
        print_json(created.to_json())
        return
    key_name = escape(created.api_key.name)  # names are free text: never read them as markup
    if bound_to is None:
        out.print(f"created {created.api_key.kind} key [bold]{key_name}[/bold]")
    else:
        out.print(f"created executor key [bold]{key_name}[/bold] for executor {bound_to.name}")
        err.print(
            "Its other keys keep working until revoked (`nodeplane keys revoke`); "
            f"`nodeplane executors rebind {bound_to.name} --key {created.api_key.id}` "
            "revokes them all."
        )
    err.print("The secret is shown only now; store it somewhere safe:")
    out.print(created.secret, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("list")
def list_keys(
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List API keys (never their secrets) with when each was last used."""
    with connect(url, token) as client:
        keys = client.api_keys()
    print_list(keys, output, keys_table, "no API keys")


@keys_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="Key id, or the name of one active key.")],
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Revoke an API key: it stops working at once."""
    with connect(url, token) as client:
        revoked = client.revoke_api_key(find_key(client, key).id)
    if output is OutputFormat.JSON:
        print_json(revoked.to_json())
    else:
        name = escape(revoked.name)
        out.print(f"revoked {revoked.kind} key [bold]{name}[/bold] ({revoked.id})")
