"""`nodeplane executors`: the agents and operators connected to the control plane."""

import typer

from nodeplane.cli.common import (
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
    out,
    print_json,
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
    if output is OutputFormat.JSON:
        print_json([e.to_json() for e in executors])
    elif executors:
        out.print(executors_table(executors))
    else:
        out.print("no executors yet: create an executor key and start an agent")
