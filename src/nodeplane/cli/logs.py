"""`nodeplane nodes logs`: a node's process output, as it streams from its executor."""

import json
import sys
from typing import Annotated

import typer

from nodeplane.cli.common import (
    ExecutorOption,
    ExitCode,
    NodeArg,
    OutputFormat,
    OutputOption,
    TokenOption,
    UrlOption,
    connect,
)
from nodeplane.cli.errors import ApiError
from nodeplane.cli.lookup import find_node
from nodeplane.protocol.logs import DEFAULT_LOG_TAIL, MAX_LOG_TAIL, LogLevel


def logs(
    node: NodeArg,
    executor: ExecutorOption = None,
    role: Annotated[
        str | None, typer.Option("--role", "-r", help="The process (default: the first role).")
    ] = None,
    tail: Annotated[
        int,
        typer.Option("--tail", "-n", min=0, max=MAX_LOG_TAIL, help="Lines before the live ones."),
    ] = DEFAULT_LOG_TAIL,
    level: Annotated[
        LogLevel | None, typer.Option("--level", "-l", help="Only lines this severe or more.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """A node's process output: the last --tail lines, then (with -f) new ones as written.

    Lines are printed as the process wrote them (`-o json`: one {"level", "text"} object per
    line); lines the stream had to drop are counted on stderr."""
    with connect(url, token) as client:
        node_id = find_node(client, node, executor).id
        try:
            for event in client.stream_logs(
                node_id,
                role=role,
                tail=tail,
                level=level.value if level else None,
                follow=follow,
            ):
                if event.dropped:
                    typer.echo(f"[{event.dropped} lines dropped]", err=True)
                for line_level, text in event.lines:
                    if output is OutputFormat.JSON:
                        line = json.dumps({"level": line_level, "text": text})
                    else:
                        line = text
                    sys.stdout.write(line + "\n")
                sys.stdout.flush()
                if event.ended and event.code:
                    raise ApiError(event.code, event.message or "the log stream failed")
        except KeyboardInterrupt:
            raise typer.Exit(ExitCode.INTERRUPTED) from None
