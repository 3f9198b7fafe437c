"""`nodeplane nodes`: list, inspect and deploy nodes, and read their events and revisions."""

import json
import sys
from typing import Annotated

import typer

from nodeplane.cli import lifecycle
from nodeplane.cli.client import ApiError
from nodeplane.cli.common import (
    ExecutorOption,
    ExitCode,
    NodeArg,
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
from nodeplane.cli.lookup import (
    default_executor,
    find_executor,
    find_node,
    node_id_for_history,
)
from nodeplane.cli.models import Event
from nodeplane.cli.render import events_table, node_detail, nodes_table, revisions_table
from nodeplane.cli.spec_flags import build_spec, read_spec_file
from nodeplane.cli.wait import DEFAULT_TIMEOUT, Target, wait_for
from nodeplane.protocol import NodePhase
from nodeplane.protocol.logs import DEFAULT_LOG_TAIL, MAX_LOG_TAIL, LogLevel

EVENTS_PAGE_SIZE = 100  # one round trip for the default --limit, a few for long histories

nodes_app = typer.Typer(help="Deploy, inspect, start, stop and delete nodes.", no_args_is_help=True)

nodes_app.command("start")(lifecycle.start)
nodes_app.command("stop")(lifecycle.stop)
nodes_app.command("restart")(lifecycle.restart)
nodes_app.command("delete")(lifecycle.delete)


@nodes_app.command("list")
def list_nodes(
    executor: ExecutorOption = None,
    chain: Annotated[str | None, typer.Option(help="Only nodes of this chain.")] = None,
    phase: Annotated[NodePhase | None, typer.Option(help="Only nodes in this phase.")] = None,
    name: Annotated[str | None, typer.Option(help="Only names containing this text.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List nodes with their phase, revision and pending/stale markers."""
    with connect(url, token) as client:
        executor_id = find_executor(client, executor).id if executor else None
        nodes = client.all_nodes(name=name, executor_id=executor_id, chain=chain, phase=phase)
    print_list(nodes, output, nodes_table, "no nodes")


@nodes_app.command("get")
def get_node(
    node: NodeArg,
    executor: ExecutorOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one node: phase, spec summary and processes."""
    with connect(url, token) as client:
        found = find_node(client, node, executor)
    if output is OutputFormat.JSON:
        print_json(found.to_json())
    else:
        out.print(node_detail(found))


@nodes_app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="Name of the new node (a DNS label).")],
    executor: Annotated[
        str | None,
        typer.Option("--executor", "-e", help="Executor name or id; default: the only one."),
    ] = None,
    chain: Annotated[str | None, typer.Option(help="bitcoin, litecoin, ethereum...")] = None,
    network: Annotated[str | None, typer.Option(help="mainnet, testnet, regtest...")] = None,
    client: Annotated[
        list[str] | None,
        typer.Option(
            "--client", help="role=name:version, e.g. node=litecoind:0.21.4 (repeatable)."
        ),
    ] = None,
    node_type: Annotated[str | None, typer.Option(help="full or archive.")] = None,
    override_arg: Annotated[
        list[str] | None,
        typer.Option(help="role=FLAG added to that role's command line (repeatable)."),
    ] = None,
    storage_size: Annotated[str | None, typer.Option(help="Volume size, e.g. 500Gi.")] = None,
    spec_file: Annotated[
        str | None,
        typer.Option(help="A NodeSpec JSON file (- for stdin); flags given too override it."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the node is running.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Deploy a node on an executor: revision 1 of its spec."""
    spec = build_spec(
        read_spec_file(spec_file) if spec_file else {},
        chain=chain,
        network=network,
        node_type=node_type,
        clients=client or [],
        override_args=override_arg or [],
        storage_size=storage_size,
    )
    with connect(url, token) as api:
        target = find_executor(api, executor) if executor else default_executor(api)
        created = api.create_node(target.id, name, spec)
        final = created
        if wait:
            final = wait_for(api, created, Target.RUNNING, timeout=timeout, console=err) or created
    if output is OutputFormat.JSON:
        print_json(final.to_json())
    else:
        out.print(
            f"deployed [bold]{final.name}[/bold] on {target.name} "
            f"(revision {final.revision}, phase {final.phase.value})"
        )


@nodes_app.command("events")
def events(
    node: NodeArg,
    executor: ExecutorOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many events, newest first.")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """A node's events, newest first, paging through the feed up to --limit."""
    with connect(url, token) as client:
        node_id = node_id_for_history(client, node, executor)
        found: list[Event] = []
        after: str | None = None
        while len(found) < limit:
            page = client.events(
                node_id=node_id, first=min(limit - len(found), EVENTS_PAGE_SIZE), after=after
            )
            found += page.items
            if not page.has_next_page or page.end_cursor is None:
                break
            after = page.end_cursor
    found = found[:limit]
    print_list(found, output, events_table, "no events")


@nodes_app.command("logs")
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


@nodes_app.command("revisions")
def revisions(
    node: NodeArg,
    executor: ExecutorOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """A node's spec revisions, oldest first: who changed what, and why."""
    with connect(url, token) as client:
        history = client.revisions(node_id_for_history(client, node, executor))
    print_list(history, output, revisions_table, "no revisions")
