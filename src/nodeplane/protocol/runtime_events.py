"""The event types an executor may record: its own namespace, declared once (DESIGN §4).

Executors report what their runtime sees about a node (`node.*`) or about themselves
(`executor.*`). Everything else in the events feed — lifecycle transitions, removals, keys,
members, connectivity — is the control plane's to say, and an executor cannot forge it.
"""

from enum import StrEnum


class RuntimeEventType(StrEnum):
    """Every runtime event type an executor may report."""

    # A process of the node exited and its restart policy kept it down.
    NODE_PROCESS_CRASHED = "node.process.crashed"
    # A process of the node exited and was started again.
    NODE_PROCESS_RESTARTED = "node.process.restarted"
    # The executor could not apply a revision (the node's applyError says why).
    NODE_APPLY_FAILED = "node.apply.failed"
    # A one-time init step (say, generating a JWT secret) failed.
    NODE_INIT_FAILED = "node.init.failed"
    # The executor could not tear a deleted node down.
    NODE_TEARDOWN_FAILED = "node.teardown.failed"
    # The node stopped making progress towards the chain head.
    NODE_SYNC_STALLED = "node.sync.stalled"
    # The node's client reported an error while syncing.
    NODE_SYNC_ERROR = "node.sync.error"
    # Housekeeping (restart policies, cleanup) failed on the executor.
    EXECUTOR_HOUSEKEEPING_FAILED = "executor.housekeeping.failed"
    # The executor found its local state unreadable and rebuilt it.
    EXECUTOR_STATE_REBUILT = "executor.state.rebuilt"
    # The executor's host is short of disk for its nodes.
    EXECUTOR_DISK_LOW = "executor.disk.low"


# Names older agents send, and what they mean now (an upgrade keeps old agents working).
LEGACY_RUNTIME_EVENT_TYPES: dict[str, RuntimeEventType] = {
    "process.crashed": RuntimeEventType.NODE_PROCESS_CRASHED,
    "process.restarted": RuntimeEventType.NODE_PROCESS_RESTARTED,
}


def runtime_event_type(raw: str) -> RuntimeEventType:
    """The declared type `raw` names (legacy names mapped); ValueError naming it otherwise."""
    if raw in LEGACY_RUNTIME_EVENT_TYPES:
        return LEGACY_RUNTIME_EVENT_TYPES[raw]
    try:
        return RuntimeEventType(raw)
    except ValueError:
        raise ValueError(
            f"{raw[:128]!r} is not an event type an executor may record "
            "(runtime types are node.* and executor.*, see RuntimeEventType)"
        ) from None
