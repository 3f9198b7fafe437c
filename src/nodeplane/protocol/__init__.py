"""The wire contract shared by the control plane and the executors: pure models and functions."""

from nodeplane.protocol.capabilities import (
    ChainCapability,
    ClientCapability,
    ExecutorCapabilities,
    ResourceDefaults,
    RoleCapability,
    managed_override_offenders,
    unsupported_reason,
)
from nodeplane.protocol.enums import (
    DesiredState,
    EventLevel,
    EventSource,
    ExecutorKind,
    LifecycleAction,
    NodePhase,
    NodeType,
    ProcessStatus,
    RestartPolicy,
    ServiceType,
)
from nodeplane.protocol.executor_api import (
    MAX_POLL_WAIT_SECONDS,
    AssignedNodeSpec,
    HostResources,
    KnownRevision,
    NodeObservation,
    RuntimeEvent,
    SyncExecutorRequest,
)
from nodeplane.protocol.names import MAX_NODE_NAME_LENGTH, is_valid_node_name, node_name_problem
from nodeplane.protocol.observed import ObservedNodeState, ObservedProcess
from nodeplane.protocol.phase import derive_node_phase
from nodeplane.protocol.spec import (
    AgentHints,
    ClientSelection,
    NodeSpec,
    OperatorHints,
    Overrides,
    ResourceSpec,
    StorageSpec,
)

__all__ = [
    "MAX_NODE_NAME_LENGTH",
    "MAX_POLL_WAIT_SECONDS",
    "AgentHints",
    "AssignedNodeSpec",
    "ChainCapability",
    "ClientCapability",
    "ClientSelection",
    "DesiredState",
    "EventLevel",
    "EventSource",
    "ExecutorCapabilities",
    "ExecutorKind",
    "HostResources",
    "KnownRevision",
    "LifecycleAction",
    "NodeObservation",
    "NodePhase",
    "NodeSpec",
    "NodeType",
    "ObservedNodeState",
    "ObservedProcess",
    "OperatorHints",
    "Overrides",
    "ProcessStatus",
    "ResourceDefaults",
    "ResourceSpec",
    "RestartPolicy",
    "RoleCapability",
    "RuntimeEvent",
    "ServiceType",
    "StorageSpec",
    "SyncExecutorRequest",
    "derive_node_phase",
    "is_valid_node_name",
    "managed_override_offenders",
    "node_name_problem",
    "unsupported_reason",
]
