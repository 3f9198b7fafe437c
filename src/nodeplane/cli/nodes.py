"""`nodeplane nodes`: list, inspect and deploy nodes, and read their events and revisions."""

from collections.abc import Sequence
from typing import Annotated

import typer

from nodeplane.cli.common import (
    ExecutorOption,
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
from nodeplane.cli.lazy import lazy_group
from nodeplane.cli.lookup import (
    default_executor,
    find_executor,
    find_node,
    node_id_for_history,
)
from nodeplane.cli.models import Event, Node, NodeRow
from nodeplane.cli.render import events_table, node_detail, nodes_table, revisions_table
from nodeplane.cli.spec_flags import build_spec, read_spec_file
from nodeplane.cli.wait import DEFAULT_TIMEOUT, Target, wait_for
from nodeplane.protocol import NodePhase

EVENTS_PAGE_SIZE = 100  # one round trip for the default --limit, a few for long histories

# The commands that change a node, and logs, live in their own modules, imported when named:
# `nodes list` does not load the spec-editing rules or the log protocol's models (cli/lazy.py).
nodes_app = typer.Typer(
    cls=lazy_group(
        {
            "start": "nodeplane.cli.lifecycle:start",
            "stop": "nodeplane.cli.lifecycle:stop",
            "restart": "nodeplane.cli.lifecycle:restart",
            "delete": "nodeplane.cli.lifecycle:delete",
            "edit": "nodeplane.cli.edit:edit",
            "rollback": "nodeplane.cli.edit:rollback",
            "list": None,
            "get": None,
            "deploy": None,
            "events": None,
            "logs": "nodeplane.cli.logs:logs",
            "revisions": None,
        }
    ),
    help="Deploy, inspect, start, stop and delete nodes.",
    no_args_is_help=True,
)


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
        filters = {"name": name, "executor_id": executor_id, "chain": chain, "phase": phase}
        # The table shows no spec or observation: its rows are a third of whole nodes' bytes.
        nodes: Sequence[Node | NodeRow] = (
            client.all_nodes(**filters)
            if output is OutputFormat.JSON
            else client.all_node_rows(**filters)
        )
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
