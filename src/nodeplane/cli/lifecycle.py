"""`nodeplane nodes start|stop|restart|delete`: changes of desired state, optionally followed."""

from typing import Annotated

import typer

from nodeplane.cli.common import (
    ExecutorOption,
    NodeArg,
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
)
from nodeplane.cli.errors import ApiError
from nodeplane.cli.lookup import find_node
from nodeplane.cli.models import Node
from nodeplane.cli.wait import DEFAULT_TIMEOUT, Target, wait_for
from nodeplane.protocol import LifecycleAction

ExpectedRevision = Annotated[
    int | None,
    typer.Option(
        help="Refuse (revision_conflict) unless the node is still at this revision.",
        show_default=False,
    ),
]
Wait = Annotated[bool, typer.Option(help="Follow the phase until the change has taken effect.")]
Timeout = Annotated[
    float, typer.Option(min=0, help="Seconds --wait waits before giving up (exit 5).")
]


def _show(node: Node, output: OutputFormat, summary: str) -> None:
    if output is OutputFormat.JSON:
        print_json(node.to_json())
    else:
        out.print(summary, highlight=False)


def _act(
    action: LifecycleAction,
    target: Target,
    node: str,
    executor: str | None,
    *,
    expected_revision: int | None,
    wait: bool,
    timeout: float,
    url: str | None,
    token: str | None,
    output: OutputFormat,
) -> None:
    with connect(url, token) as client:
        found = find_node(client, node, executor)
        changed = client.lifecycle(found.id, action, expected_revision)
        reached = wait_for(client, changed, target, timeout=timeout, console=err) if wait else None
    if reached is not None:
        _show(reached, output, f"{reached.name} is {target} (revision {reached.revision})")
        return
    where = f"revision {changed.revision}, phase {changed.phase.value}"
    if changed.revision == found.revision:
        _show(changed, output, f"{changed.name} is already desired {target} ({where})")
    else:
        _show(changed, output, f"{action.value} requested for {changed.name} ({where})")


def start(
    node: NodeArg,
    executor: ExecutorOption = None,
    expected_revision: ExpectedRevision = None,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Start a stopped node (desired state running); --wait until it is running."""
    _act(
        LifecycleAction.START,
        Target.RUNNING,
        node,
        executor,
        expected_revision=expected_revision,
        wait=wait,
        timeout=timeout,
        url=url,
        token=token,
        output=output,
    )


def stop(
    node: NodeArg,
    executor: ExecutorOption = None,
    expected_revision: ExpectedRevision = None,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Stop a node, keeping its data (desired state stopped); --wait until it is stopped."""
    _act(
        LifecycleAction.STOP,
        Target.STOPPED,
        node,
        executor,
        expected_revision=expected_revision,
        wait=wait,
        timeout=timeout,
        url=url,
        token=token,
        output=output,
    )


def restart(
    node: NodeArg,
    executor: ExecutorOption = None,
    expected_revision: ExpectedRevision = None,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Restart a running node's processes; --wait until it is running again."""
    _act(
        LifecycleAction.RESTART,
        Target.RUNNING,
        node,
        executor,
        expected_revision=expected_revision,
        wait=wait,
        timeout=timeout,
        url=url,
        token=token,
        output=output,
    )


def delete(
    node: NodeArg,
    executor: ExecutorOption = None,
    keep_data: Annotated[
        bool,
        typer.Option(
            "--keep-data/--delete-data",
            help="Keep the node's data on the executor (default), or remove it for good.",
        ),
    ] = True,
    yes: YesOption = False,
    expected_revision: ExpectedRevision = None,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a node: its executor stops and removes it; --wait until it is gone."""
    with connect(url, token) as client:
        found = find_node(client, node, executor)
        if expected_revision is not None and expected_revision != found.revision:
            # deleteNode takes no expected revision; checking here catches the common race.
            raise ApiError(
                "revision_conflict",
                f"node {found.name!r} is at revision {found.revision}, not {expected_revision}",
                "expectedRevision",
            )
        if not yes:
            err.print(_consequence(found, keep_data))
            confirm_or_stop("Delete?", declined="not deleted")
        deleted = client.delete_node(found.id, retain_data=keep_data)
        if wait:
            wait_for(client, deleted, Target.GONE, timeout=timeout, console=err)
    data = "data kept" if keep_data else "data removed"
    if wait:
        _show(deleted, output, f"{deleted.name} is deleted ({data})")
    else:
        _show(
            deleted, output, f"{deleted.name} is being deleted ({data}); its executor tears it down"
        )


def _consequence(node: Node, keep_data: bool) -> str:
    if keep_data:
        consequence = (
            "Its data stays on the executor: deploying a node with the same name on "
            f"{node.executor_name} again picks it up without resyncing."
        )
    else:
        consequence = (
            "Its data is removed for good: a node deployed again has to sync from scratch."
        )
    return f"Delete node [bold]{node.name}[/bold] on {node.executor_name}? {consequence}"
