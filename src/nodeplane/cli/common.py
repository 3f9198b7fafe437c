"""What every user command shares: connection options, `--output`, exit codes, error reports."""

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from rich.console import Console, RenderableType

from nodeplane.cli.credentials import load_credentials, resolve
from nodeplane.cli.errors import ApiError, ConnectionFailed

if TYPE_CHECKING:
    from nodeplane.cli.client import NodeplaneClient


class ExitCode(IntEnum):
    """The CLI's exit codes; scripts rely on them."""

    OK = 0
    API_ERROR = 1
    DECLINED = 1  # the user answered no: nothing was done, as with a refusal
    USAGE = 2
    CONNECTION_FAILED = 3
    WAIT_FAILED = 4
    WAIT_TIMED_OUT = 5
    INTERRUPTED = 130  # Ctrl-C, as shells report it


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    JSON = "json"


class CliFailure(Exception):
    """A failure the CLI itself detects, with the exit code it maps to."""

    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="NODEPLANE_URL",
        help="Control-plane URL; default: the one `nodeplane login` stored.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="NODEPLANE_TOKEN",
        help="Session token or API key; default: the session `nodeplane login` stored.",
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")
]
NodeArg = Annotated[str, typer.Argument(help="Node name or id.", show_default=False)]
ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor", "-e", help="Executor name or id (needed when a name is used on several)."
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


PIPED_WIDTH = 160


def _stdout_console() -> Console:
    # Piped into a file or grep, tables keep whole names and ids instead of the default 80 columns.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPED_WIDTH if piped else None)


# Results go to stdout; status lines and errors to stderr, so `--output json` stays parseable.
out = _stdout_console()
err = Console(stderr=True)


def print_error(message: str) -> None:
    """`error: message` on stderr as one line: never wrapped at the terminal's width (a path
    cut in two cannot be copied) and never read as markup (a `[...]` in a path is text)."""
    typer.echo(f"error: {message}", err=True)


def fail(message: str, exit_code: ExitCode = ExitCode.USAGE) -> NoReturn:
    """Stop the command with `error: message` on stderr."""
    raise CliFailure(exit_code, message)


def confirm_or_stop(question: str, *, declined: str) -> None:
    """Ask `question` on stderr; unless the answer is yes, print `declined` and exit DECLINED."""
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # end of input: nobody said yes
        agreed = False
    if not agreed:
        err.print(declined)
        raise typer.Exit(ExitCode.DECLINED)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the CLI's typed failures into one `error:` line and an exit code, never a traceback."""
    try:
        yield
    except ApiError as exc:
        typer.echo(f"error: {exc.message} ({exc.code})", err=True)
        if exc.code == "unauthenticated":
            typer.echo(
                "hint: the session may have expired or the key been revoked; "
                "run `nodeplane login` or pass a valid --token",
                err=True,
            )
        raise typer.Exit(ExitCode.API_ERROR) from None
    except ConnectionFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.CONNECTION_FAILED) from None
    except CliFailure as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None


@contextmanager
def connect(url: str | None, token: str | None) -> Iterator["NodeplaneClient"]:
    """A client for the chosen control plane, with errors reported as `reported_errors` does."""
    # Imported here: commands that never connect (and `--help`) need not load the HTTP stack.
    from nodeplane.cli.client import NodeplaneClient

    with reported_errors():
        creds = resolve(url, token, load_credentials())
        if not creds.url:
            fail(
                "no control plane chosen: run `nodeplane login --url URL --email EMAIL`, "
                "or pass --url (or set NODEPLANE_URL)"
            )
        if not creds.token:
            fail(
                f"not logged in to {creds.url}: run `nodeplane login --url {creds.url} "
                "--email EMAIL`, or pass --token (or set NODEPLANE_TOKEN) with an API key"
            )
        with NodeplaneClient(creds.url, creds.token) as client:
            yield client


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


class _Jsonable(Protocol):
    def to_json(self) -> Any: ...


J = TypeVar("J", bound=_Jsonable)


def print_list(
    items: Sequence[J],
    output: OutputFormat,
    table: Callable[[Sequence[J]], RenderableType],
    empty: str,
) -> None:
    """A list as one JSON array, or as a table (or `empty` when there is nothing)."""
    if output is OutputFormat.JSON:
        print_json([item.to_json() for item in items])
    elif items:
        # Not cropped at the console's width (80 columns when piped): a table fits the width
        # by itself, and a long list's aligned rows (render.AlignedRows) are never cut.
        out.print(table(items), crop=False)
    else:
        out.print(empty)
