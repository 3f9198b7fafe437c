"""`nodeplane nodes edit|rollback`: change a node as a new revision, or go back to an old one."""

from typing import Annotated, Any

import typer

from nodeplane.cli.client import NodeplaneClient
from nodeplane.cli.common import (
    CliFailure,
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
)
from nodeplane.cli.lifecycle import ExpectedRevision, Timeout, Wait
from nodeplane.cli.lookup import find_node
from nodeplane.cli.models import Node
from nodeplane.cli.spec_flags import parse_client, parse_override_arg, read_spec_file
from nodeplane.cli.wait import DEFAULT_TIMEOUT, Target, wait_for
from nodeplane.protocol import DesiredState
from nodeplane.protocol.spec_diff import spec_diff
from nodeplane.protocol.spec_edit import AUTO_ROLLBACK_CAUSE

# --resources keys, as typed (camelCase or kebab-case) → the spec's camelCase key.
RESOURCE_KEYS = {
    spelling: key
    for key, kebab in (
        ("cpuRequest", "cpu-request"),
        ("cpuLimit", "cpu-limit"),
        ("memoryRequest", "memory-request"),
        ("memoryLimit", "memory-limit"),
    )
    for spelling in (key, kebab)
}


def parse_resources(values: list[str], current: dict[str, Any]) -> dict[str, Any]:
    """`cpuLimit=2,memoryRequest=4Gi` (repeatable) laid over `current`; `key=` clears a key
    (back to the adapter's default)."""
    resources = dict(current)
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, eq, quantity = item.partition("=")
            if not eq or key.strip() not in RESOURCE_KEYS:
                raise typer.BadParameter(
                    f"{item!r} is not KEY=QUANTITY with KEY one of "
                    "cpuRequest, cpuLimit, memoryRequest, memoryLimit",
                    param_hint="--resources",
                )
            resources[RESOURCE_KEYS[key.strip()]] = quantity.strip() or None
    return resources


def edit_changes(
    current: dict[str, Any],
    *,
    clients: list[str],
    override_args: list[str],
    resources: list[str],
    storage_size: str | None,
    spec_file: dict[str, Any] | None,
    health_window: int | None = None,
    auto_rollback: bool | None = None,
) -> dict[str, Any]:
    """The updateNode fields the flags ask for, given the node's current spec.

    `--override-arg` replaces the flags of each role it names (so a flag can be dropped by
    giving the others); roles it does not name keep theirs.
    """
    changes: dict[str, Any] = {}
    if spec_file is not None:
        changes["spec"] = spec_file
    base = spec_file if spec_file is not None else current
    if clients:
        changes["clients"] = {
            role: {"name": name, "version": version}
            for role, name, version in map(parse_client, clients)
        }
    if override_args:
        overrides = dict(base.get("overrides") or {})
        args: dict[str, list[str]] = {}
        for role, flag in map(parse_override_arg, override_args):
            args.setdefault(role, []).append(flag)
        overrides["args"] = {**(overrides.get("args") or {}), **args}
        changes["overrides"] = overrides
    if resources:
        changes["resources"] = parse_resources(resources, base.get("resources") or {})
    if storage_size is not None:
        changes["storage"] = {"size": storage_size}
    rollout: dict[str, Any] = {}
    if health_window is not None:
        rollout["healthWindowSeconds"] = health_window
    if auto_rollback is not None:
        rollout["autoRollback"] = auto_rollback
    if rollout:
        changes["rollout"] = rollout
    return changes


def _target(node: Node) -> Target:
    return Target.STOPPED if node.desired_state is DesiredState.STOPPED else Target.RUNNING


def _check_kept(api: NodeplaneClient, changed: Node, reached: Node | None) -> None:
    """Fail the wait (exit 4) when the node is running again only because the control plane
    rolled the change back by itself (autoRollback)."""
    if reached is None or reached.revision == changed.revision:
        return
    later = [r for r in api.revisions(changed.id) if r.revision > changed.revision]
    undone = next((r for r in later if r.cause == AUTO_ROLLBACK_CAUSE), None)
    if undone is None:
        return
    reason = next(
        (
            str(e.payload.get("reason"))
            for e in api.events(node_id=changed.id, first=50).items
            if e.type == "node.auto_rolled_back" and e.payload.get("revision") == undone.revision
        ),
        "see its events",
    )
    raise CliFailure(
        ExitCode.WAIT_FAILED,
        f"{changed.name}: revision {changed.revision} failed and was rolled back by itself "
        f"(revision {undone.revision}): {reason}",
    )


def _report(
    before: Node, after: Node, reached: Node | None, output: OutputFormat, verb: str
) -> None:
    final = reached or after
    if output is OutputFormat.JSON:
        print_json(final.to_json())
        return
    if after.revision == before.revision:
        out.print(f"{after.name}: nothing to change (revision {after.revision})", highlight=False)
        return
    changes = spec_diff(before.spec, after.spec)
    out.print(
        f"{verb} {after.name}: revision {after.revision}, "
        f"{len(changes)} change{'' if len(changes) == 1 else 's'}",
        highlight=False,
    )
    for change in changes:
        out.print(f"  {change.path}: {change.before} → {change.after}", highlight=False)
    if reached is not None:
        out.print(f"{reached.name} is {reached.phase.value} at revision {reached.revision}")


def edit(
    node: NodeArg,
    executor: ExecutorOption = None,
    client: Annotated[
        list[str] | None,
        typer.Option(
            "--client", help="role=name:version, e.g. node=litecoind:0.21.4 (repeatable)."
        ),
    ] = None,
    override_arg: Annotated[
        list[str] | None,
        typer.Option(help="role=FLAG; replaces that role's extra flags (repeatable)."),
    ] = None,
    resources: Annotated[
        list[str] | None,
        typer.Option(help="cpuRequest=2,memoryLimit=8Gi (KEY= resets one to the default)."),
    ] = None,
    storage_size: Annotated[str | None, typer.Option(help="Grow the volume, e.g. 500Gi.")] = None,
    spec_file: Annotated[
        str | None,
        typer.Option(help="A whole NodeSpec JSON file (- for stdin); flags given too win."),
    ] = None,
    health_window: Annotated[
        int | None,
        typer.Option(min=1, help="Seconds a new revision has to reach running or syncing."),
    ] = None,
    auto_rollback: Annotated[
        bool | None,
        typer.Option(
            "--auto-rollback/--no-auto-rollback",
            help="Go back to the last healthy revision by itself when one fails.",
            show_default=False,
        ),
    ] = None,
    cause: Annotated[str | None, typer.Option(help="Why, kept with the revision.")] = None,
    expected_revision: ExpectedRevision = None,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Edit a node: client versions, override flags, resources, storage growth (a new revision).

    --wait follows the node until its executor has applied the change."""
    document = read_spec_file(spec_file) if spec_file else None
    with connect(url, token) as api:
        found = find_node(api, node, executor)
        changes = edit_changes(
            found.spec,
            clients=client or [],
            override_args=override_arg or [],
            resources=resources or [],
            storage_size=storage_size,
            spec_file=document,
            health_window=health_window,
            auto_rollback=auto_rollback,
        )
        if not changes:
            raise typer.BadParameter(
                "nothing to change: give --client, --override-arg, --resources, "
                "--storage-size, --health-window, --auto-rollback or --spec-file"
            )
        if cause is not None:
            changes["cause"] = cause
        changed = api.update_node(found.id, changes, expected_revision)
        reached = None
        if wait and changed.revision != found.revision:
            reached = wait_for(api, changed, _target(changed), timeout=timeout, console=err)
            _check_kept(api, changed, reached)
    _report(found, changed, reached, output, "edited")


def rollback(
    node: NodeArg,
    to: Annotated[int, typer.Option("--to", min=1, help="The revision to go back to.")],
    executor: ExecutorOption = None,
    expected_revision: ExpectedRevision = None,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_TIMEOUT,
    url: UrlOption = None,
    token: TokenOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Roll a node back: a new revision whose spec is revision --to's (desired state kept).

    --wait follows the node until its executor has applied it."""
    with connect(url, token) as api:
        found = find_node(api, node, executor)
        changed = api.rollback_node(found.id, to, expected_revision)
        reached = None
        if wait and changed.revision != found.revision:
            reached = wait_for(api, changed, _target(changed), timeout=timeout, console=err)
    _report(found, changed, reached, output, f"rolled back to revision {to}:")
