"""`--wait`: follow a node's phase until a lifecycle change took effect, failed or timed out."""

import time
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from nodeplane.cli.common import CliFailure, ExitCode
from nodeplane.cli.models import Node
from nodeplane.cli.render import phase_text
from nodeplane.protocol import NodePhase

if TYPE_CHECKING:  # `nodes deploy` imports this module; only --wait needs a live status line
    from rich.status import Status

    from nodeplane.cli.client import NodeplaneClient

DEFAULT_TIMEOUT = 300.0
POLL_INTERVAL = 1.0


class Target(StrEnum):
    """Where a lifecycle command leaves a node."""

    RUNNING = "running"
    STOPPED = "stopped"
    GONE = "gone"


class Progress(StrEnum):
    """How far a node is on its way to a target."""

    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


def judge(node: Node | None, target: Target, revision: int) -> Progress:
    """Where `node` stands against `target`, given the revision the command wrote.

    Only an observation of `revision` (or later) counts, so a phase left over from before the
    change, such as an old error or the running phase before a restart, neither ends nor fails
    the wait.
    """
    if target is Target.GONE:
        return Progress.DONE if node is None else Progress.WAITING
    if node is None:
        return Progress.FAILED  # deleted while we waited for it to run or stop
    current = node.observed_revision is not None and node.observed_revision >= revision
    if not current:
        return Progress.WAITING
    if node.phase is NodePhase.ERROR:
        return Progress.FAILED
    if node.phase.value == target.value:
        return Progress.DONE
    return Progress.WAITING


def error_reason(node: Node | None) -> str:
    """What the executor said went wrong, as far as it said anything."""
    if node is None:
        return "the node was deleted"
    observed = node.observed or {}
    reasons = [str(observed["applyError"])] if observed.get("applyError") else []
    for p in observed.get("processes") or []:
        if p.get("status") == "error":
            reasons.append(f"{p.get('role')}: {p.get('message') or 'process error'}")
    return "; ".join(reasons) or "the executor reported an error"


class PhaseLine:
    """A live status line on a terminal; elsewhere (CI logs) one line per phase change."""

    def __init__(self, console: Console, name: str, target: Target) -> None:
        self.console = console
        self.name = name
        self.target = target
        self.started = time.monotonic()
        self._status: Status | None = None
        self._last: str | None = None

    def __enter__(self) -> "PhaseLine":
        if self.console.is_terminal:
            self._status = self.console.status(f"{self.name}: waiting for {self.target}")
            self._status.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()

    def show(self, node: Node | None) -> None:
        """Report where the node is now: each new phase as a line, the wait on the live line."""
        phase = phase_text(node.phase) if node else Text("gone")
        text = Text.assemble(f"{self.name}: ", phase)
        if node and node.stale:
            text.append(" (executor offline)", style="yellow")
        if text.plain != self._last:
            self.console.print(text, highlight=False)
            self._last = text.plain
        if self._status is not None:
            elapsed = int(time.monotonic() - self.started)
            self._status.update(Text.assemble(text, f" - waiting for {self.target} ({elapsed}s)"))


def wait_for(
    client: "NodeplaneClient",
    node: Node,
    target: Target,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    console: Console,
    interval: float = POLL_INTERVAL,
) -> Node | None:
    """Poll the node until it reaches `target`; raise CliFailure on error or timeout."""
    try:
        return _follow(client, node, target, timeout, console, interval)
    except KeyboardInterrupt:
        # Ctrl-C ends the wait, not the change: say so, since the executor carries on.
        raise CliFailure(
            ExitCode.INTERRUPTED, f"stopped waiting; the change to {node.name} stays requested"
        ) from None


def _follow(
    client: "NodeplaneClient",
    node: Node,
    target: Target,
    timeout: float,
    console: Console,
    interval: float,
) -> Node | None:
    deadline = time.monotonic() + timeout
    current: Node | None = node
    with PhaseLine(console, node.name, target) as line:
        while True:
            line.show(current)
            progress = judge(current, target, node.revision)
            if progress is Progress.DONE:
                return current
            if progress is Progress.FAILED:
                raise CliFailure(
                    ExitCode.WAIT_FAILED,
                    f"{node.name} did not become {target}: {error_reason(current)}",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                phase = current.phase.value if current else "gone"
                raise CliFailure(
                    ExitCode.WAIT_TIMED_OUT,
                    f"timed out after {timeout:g}s waiting for {node.name} to be {target} "
                    f"(phase: {phase})",
                )
            time.sleep(min(interval, remaining))
            current = client.node(node.id)
