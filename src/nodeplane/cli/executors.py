"""`nodeplane executors`: the agents and operators connected to the control plane."""

import typer

from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
    print_list,
)
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
