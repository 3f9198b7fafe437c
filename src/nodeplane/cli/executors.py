"""`nodeplane executors`: the agents and operators connected to the control plane."""

from typing import Annotated
from uuid import UUID

import typer
from rich.markup import escape

from nodeplane.cli.client import NodeplaneClient
from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    YesOption,
    confirm_or_stop,
    connect,
    err,
    out,
    print_json,
    print_list,
)
from nodeplane.cli.lookup import find_executor, key_id
from nodeplane.cli.models import Executor
from nodeplane.cli.render import executors_table

executors_app = typer.Typer(
    help="Executors: the agents and operators that run nodes.", no_args_is_help=True
)


@executors_app.command("list")
def list_executors(
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List executors: online or offline, version, nodes hosted, chains they can run."""
    with connect(url, token) as client:
        executors = client.executors()
    print_list(
        executors,
        output,
        executors_table,
        "no executors yet: create an executor key and start an agent",
    )


@executors_app.command("rebind")
def rebind(
    executor: Annotated[str, typer.Argument(help="Executor name or id.", show_default=False)],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            "-k",
            help="The executor key to bind: its id, or the name of one active key.",
            show_default=False,
        ),
    ],
    yes: YesOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Bind an executor key to an executor and revoke every other key bound to it.

    For a host that lost its key or was rebuilt: the old key stops working at once.
    """
    with connect(url, token) as client:
        target = find_executor(client, executor)
        new_key = key_id(client, key)
        if not yes:
            err.print(_consequence(client, target, new_key))
            confirm_or_stop("Rebind?", declined="not rebound")
        result = client.rebind_executor(target.id, new_key)
    if output is OutputFormat.JSON:
        print_json(result.to_json())
        return
    out.print(
        f"bound executor [bold]{result.executor.name}[/bold] to key "
        f"[bold]{escape(result.api_key.name)}[/bold] ({result.api_key.id})"
    )
    for revoked in result.revoked_keys:
        out.print(f"revoked key [bold]{escape(revoked.name)}[/bold] ({revoked.id})")
    if not result.revoked_keys:
        out.print("no other key was bound to it")


def _consequence(client: NodeplaneClient, executor: Executor, new_key: UUID) -> str:
    # The answer names what was revoked; the question names what will be, as far as the caller
    # can see keys (members see only their own, and the API refuses them anyway).
    keys = client.api_keys()
    chosen = next((escape(repr(k.name)) for k in keys if k.id == new_key), str(new_key))
    bound = [k for k in keys if k.executor_id == executor.id and k.enabled and k.id != new_key]
    if bound:
        names = ", ".join(f"{escape(repr(k.name))} ({k.id})" for k in bound)
        revoked = f"These keys are revoked at once: {names}."
    else:
        revoked = "Any other key bound to it is revoked at once."
    return (
        f"Bind executor [bold]{executor.name}[/bold] to key {chosen}? {revoked} "
        "A host still using a revoked key stops syncing."
    )
