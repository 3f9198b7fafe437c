"""Rich tables for people; `--output json` bypasses all of this.

Text someone typed (key names, messages, causes) goes into cells as `Text`, never as a string,
which Rich would read as markup: `[/x]` in a key name must print, not fail or restyle the table.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from nodeplane.cli.models import ApiKey, Event, Executor, Incident, Member, Node, NodeRow, Revision
from nodeplane.protocol import EventLevel, NodePhase

if TYPE_CHECKING:  # imported where a table is made: the nodes list (AlignedRows) needs none
    from rich.table import Table

PHASE_STYLE: dict[NodePhase, str] = {
    NodePhase.RUNNING: "green",
    NodePhase.SYNCING: "cyan",
    NodePhase.STARTING: "yellow",
    NodePhase.CONFIGURING: "yellow",
    NodePhase.PROVISIONING: "yellow",
    NodePhase.STOPPING: "yellow",
    NodePhase.STOPPED: "dim",
    NodePhase.DELETING: "magenta",
    NodePhase.ERROR: "bold red",
}
LEVEL_STYLE: dict[EventLevel, str] = {
    EventLevel.INFO: "",
    EventLevel.WARN: "yellow",
    EventLevel.ERROR: "bold red",
}


def _table(*fixed: str, wrap: Sequence[str] = ()) -> "Table":
    """A table whose `fixed` columns never wrap (names, ids, times) and whose `wrap` ones may."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD)
    for header in fixed:
        table.add_column(header, no_wrap=True)
    for header in wrap:
        table.add_column(header, overflow="fold")
    return table


class AlignedRows:
    """Columns padded to their widest cell, one line per row, like `kubectl get`: for lists that
    run to hundreds of rows (a Rich Table measured and wrapped every cell: 200 nodes took a
    third of `nodes list`). Lines are not wrapped; the last column is not padded."""

    GAP = 2

    def __init__(self, *headers: str) -> None:
        self.headers = [Text(h, style="bold") for h in headers]
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: str | Text) -> None:
        """A row; plain strings are taken literally (never as markup)."""
        self.rows.append([c if isinstance(c, Text) else Text(c) for c in cells])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = [self.headers, *self.rows]
        widths = [max(line[i].cell_len for line in lines) for i in range(len(self.headers))]
        last = len(widths) - 1
        for line in lines:
            for i, cell in enumerate(line):
                # Text.render gives the spans' styles only; the text's own style is the base.
                yield from Segment.apply_style(cell.render(console), console.get_style(cell.style))
                if i < last:
                    yield Segment(" " * (widths[i] - cell.cell_len + self.GAP), Style.null())
            yield Segment.line()


def phase_text(phase: NodePhase) -> Text:
    """The phase, colored like the UI's badge."""
    return Text(phase.value, style=PHASE_STYLE.get(phase, ""))


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago`, or `never`."""
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def when(moment: datetime | None) -> str:
    """A timestamp in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _flags(node: Node | NodeRow) -> str:
    marks = []
    if node.pending_change and node.observed_revision is not None:
        marks.append(f"pending change (applied: {node.observed_revision})")
    elif node.pending_change:
        marks.append("pending change")
    if node.stale:
        marks.append("stale")
    return ", ".join(marks)


def clients_of(spec: dict[str, Any]) -> str:
    """`role=name:version` for each client of a spec."""
    clients = spec.get("clients") or {}
    return " ".join(
        f"{role}={c.get('name')}:{c.get('version')}"
        for role, c in clients.items()
        if isinstance(c, dict)
    )


def nodes_table(nodes: Sequence[Node | NodeRow]) -> AlignedRows:
    """One row per node, as on the UI's nodes page."""
    table = AlignedRows("NAME", "EXECUTOR", "CHAIN", "NETWORK", "PHASE", "DESIRED", "REV", "NOTES")
    for n in nodes:
        table.add_row(
            n.name,
            n.executor_name,
            n.chain,
            n.network,
            phase_text(n.phase),
            n.desired_state.value,
            str(n.revision),
            _flags(n),
        )
    return table


def node_detail(node: Node) -> RenderableType:
    """A node's fields and, once observed, its processes."""
    from rich.table import Table

    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("name", node.name),
        ("id", str(node.id)),
        ("executor", f"{node.executor_name} ({node.executor.status})" if node.executor else "-"),
        ("chain", f"{node.chain} {node.network} ({node.spec.get('nodeType', 'full')})"),
        ("clients", clients_of(node.spec)),
        ("phase", phase_text(node.phase)),
        ("desired", node.desired_state.value),
        ("revision", f"{node.revision} (applied: {node.observed_revision or '-'})"),
        ("storage", str((node.spec.get("storage") or {}).get("size", "-"))),
        ("last report", ago(node.observed_at)),
        ("notes", _flags(node) or "-"),
    ]
    if node.deleted_at:
        rows.append(("deleted", f"{when(node.deleted_at)} (keep data: {node.retain_data})"))
    for label, value in rows:
        fields.add_row(label, value)
    processes = (node.observed or {}).get("processes") or []
    if not processes:
        return fields
    table = _table("ROLE", "STATUS", "HEIGHT", "NETWORK HEIGHT", "PEERS", "SYNC", wrap=["MESSAGE"])
    for p in processes:
        progress = p.get("syncProgress")
        table.add_row(
            str(p.get("role", "")),
            str(p.get("status", "")),
            _opt(p.get("height")),
            _opt(p.get("networkHeight")),
            _opt(p.get("peers")),
            "-" if progress is None else f"{progress:.1%}",
            str(p.get("message") or ""),
        )
    apply_error = (node.observed or {}).get("applyError")
    parts: list[RenderableType] = [fields, table]
    if apply_error:
        parts.append(Text(f"apply error: {apply_error}", style="red"))
    return Group(*parts)


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def executors_table(executors: Sequence[Executor]) -> "Table":
    """One row per executor, with what it can run."""
    table = _table("NAME", "KIND", "STATUS", "VERSION", "NODES", "LAST SYNC", wrap=["CHAINS"])
    for e in executors:
        chains = [
            c.get("chain", "?") for c in e.capabilities.get("chains", []) if isinstance(c, dict)
        ]
        table.add_row(
            e.name,
            e.kind,
            Text(e.status, style="green" if e.status == "online" else "dim"),
            e.version,
            str(e.node_count),
            ago(e.last_sync_at),
            ", ".join(chains) or "-",
        )
    return table


def events_table(events: Sequence[Event]) -> "Table":
    """The events feed, newest first."""
    # The actor is in the message (and in --output json); the message gets the room.
    table = _table("TIME", "LEVEL", wrap=["MESSAGE", "TYPE"])
    for e in events:
        table.add_row(
            when(e.created_at),
            Text(e.level.value, style=LEVEL_STYLE.get(e.level, "")),
            Text(e.message),
            e.type,
        )
    return table


def incidents_table(incidents: Sequence[Incident]) -> "Table":
    """Alert incidents, newest opened first."""
    table = _table("OPENED", "STATE", "SEVERITY", "RULE", "SUBJECT", "RESOLVED", wrap=["MESSAGE"])
    for i in incidents:
        table.add_row(
            when(i.opened_at),
            Text(i.state, style="bold red" if i.state == "open" else "dim"),
            Text(i.severity, style="red" if i.severity == "critical" else "yellow"),
            i.rule,
            Text(f"{i.subject_kind} {i.subject_name}"),
            when(i.resolved_at),
            Text(i.message),
        )
    return table


def revisions_table(revisions: Sequence[Revision]) -> "Table":
    """A node's spec history."""
    table = _table("REVISION", "TIME", "DESIRED", wrap=["AUTHOR", "CAUSE", "CLIENTS"])
    for r in revisions:
        table.add_row(
            str(r.revision),
            when(r.created_at),
            str(r.spec.get("desiredState", "running")),
            Text(r.author),
            Text(r.cause),
            clients_of(r.spec),
        )
    return table


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    """active, revoked or expired."""
    if not key.enabled:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


def keys_table(keys: Sequence[ApiKey]) -> "Table":
    """API keys, never their secrets."""
    table = _table("NAME", "KIND", "STATE", "LAST USED", "EXPIRES", "ID")
    for k in keys:
        state = key_state(k)
        table.add_row(
            Text(k.name),
            k.kind,
            Text(state, style="green" if state == "active" else "dim"),
            ago(k.last_used_at),
            when(k.expires_at) if k.expires_at else "never",
            str(k.id),
        )
    return table


ROLE_STYLE: dict[str, str] = {"owner": "bold", "admin": "", "member": "dim"}


def members_table(members: Sequence[Member]) -> "Table":
    """The organization's members and their roles."""
    table = _table("EMAIL", "ROLE", "MEMBER SINCE", "ID")
    for m in members:
        table.add_row(
            Text(m.email),
            Text(m.role, style=ROLE_STYLE.get(m.role, "")),
            when(m.created_at),
            str(m.id),
        )
    return table
