"""The derived node phase: one pure function used by the API, the UI and the CLI (DESIGN §6)."""

from nodeplane.protocol.enums import DesiredState, NodePhase, ProcessStatus
from nodeplane.protocol.observed import ObservedNodeState

_AT_REST = frozenset({ProcessStatus.STOPPED, ProcessStatus.ERROR})


def derive_node_phase(
    *,
    desired_state: DesiredState | str,
    revision: int,
    deleted: bool,
    observed: ObservedNodeState | None,
) -> NodePhase:
    """Derive the displayed phase from desired and observed state; the first matching row wins."""
    desired = DesiredState(desired_state)
    if deleted:
        return NodePhase.DELETING
    if observed is None:
        return NodePhase.PROVISIONING

    statuses = [ProcessStatus(p.status) for p in observed.processes]
    current = observed.revision >= revision
    behind = observed.revision < revision

    if desired is DesiredState.RUNNING:
        if (
            (observed.apply_error is not None and current)
            or ProcessStatus.ERROR in statuses
            or (ProcessStatus.STOPPED in statuses and current)
        ):
            return NodePhase.ERROR
        if behind:
            return NodePhase.CONFIGURING
    else:
        if behind or any(s not in _AT_REST for s in statuses):
            return NodePhase.STOPPING
        return NodePhase.STOPPED

    if ProcessStatus.STARTING in statuses or ProcessStatus.STOPPING in statuses:
        return NodePhase.STARTING
    if ProcessStatus.SYNCING in statuses:
        return NodePhase.SYNCING
    # Desired running, current, nothing errored, stopped, starting or syncing: all running.
    return NodePhase.RUNNING
