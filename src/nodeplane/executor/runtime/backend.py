"""What a backend (agent or operator) does for the runtime."""

from pathlib import Path
from typing import Protocol

from nodeplane.protocol import (
    AssignedNodeSpec,
    ExecutorCapabilities,
    ExecutorKind,
    HostResources,
    ObservedProcess,
    RuntimeEvent,
)


class ApplyError(Exception):
    """A revision cannot be applied (bad config, missing binary, ...); reported as applyError."""


class LogsUnavailable(Exception):
    """This backend cannot show the process's output (the operator: no kubelet to ask)."""


class Backend(Protocol):
    """Materializes node specs; every method is convergent and safe to call on every tick."""

    kind: ExecutorKind

    def capabilities(self) -> ExecutorCapabilities:
        """What this executor can run."""
        ...

    def resources(self) -> HostResources:
        """What the host or cluster offers."""
        ...

    async def apply(self, node: AssignedNodeSpec) -> None:
        """Converge the node's processes to its spec; raise ApplyError when it cannot."""
        ...

    async def observe(self, node: AssignedNodeSpec) -> list[ObservedProcess]:
        """The node's processes as they are now, with metrics where probes answer."""
        ...

    async def teardown(self, node: AssignedNodeSpec) -> None:
        """Stop and remove the node (its data too unless `retain_data`)."""
        ...

    async def housekeeping(self) -> None:
        """Work due on every reconcile tick before nodes are applied (e.g. restart policies)."""
        ...

    def drain_events(self) -> list[RuntimeEvent]:
        """Runtime events noticed since the last call (crashes, restarts, init failures)."""
        ...

    def log_file(self, node: AssignedNodeSpec, role: str) -> Path:
        """The file the process of `role` writes its output to (it may not exist yet); raise
        LogsUnavailable when this backend keeps none, ValueError for a role the node lacks."""
        ...
