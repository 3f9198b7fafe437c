"""The nodes list's layout (cli/render.AlignedRows): aligned columns, text taken literally."""

from io import StringIO

from rich.console import Console
from rich.text import Text

from nodeplane.cli.render import AlignedRows


def rendered(table: AlignedRows, color: bool = False) -> str:
    buffer = StringIO()
    console = Console(
        file=buffer,
        width=40,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        _environ={"TERM": "xterm"},
    )
    console.print(table, crop=False)  # as cli.common.print_list prints lists
    return buffer.getvalue()


def test_columns_line_up_under_their_headers_and_lines_are_not_wrapped() -> None:
    table = AlignedRows("NAME", "PHASE", "NOTES")
    table.add_row("a", "running", "")
    table.add_row("a-much-longer-name", "stopped", "pending change (applied: 12), stale")
    lines = rendered(table).splitlines()
    assert lines == [
        "NAME                PHASE    NOTES",
        "a                   running  ",
        "a-much-longer-name  stopped  pending change (applied: 12), stale",
    ]
    # Wider than the console: one line all the same, the terminal wraps it if it must.
    assert len(lines[2]) > 40


def test_cells_are_literal_text_and_keep_their_style() -> None:
    table = AlignedRows("NAME", "PHASE")
    table.add_row("[bold]x[/bold]", Text("error", style="bold red"))
    plain = rendered(table)
    assert "[bold]x[/bold]" in plain
    colored = rendered(table, color=True)
    assert "\x1b[1;31merror" in colored and "\x1b[1mNAME" in colored
