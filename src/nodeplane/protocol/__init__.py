"""The wire contract shared by the control plane and the executors: pure models and functions."""

from nodeplane.protocol.capabilities import (
    ChainCapability,
    ClientCapability,
    ExecutorCapabilities,
    ResourceDefaults,
    RoleCapability,
    managed_override_offenders,
    override_problems,
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
    INSTANCE_CONFLICT_CODE,
    INSTANCE_HEADER,
    MAX_POLL_WAIT_SECONDS,
    AssignedNodeSpec,
    HostResources,
    KnownRevision,
    NodeObservation,
    RuntimeEvent,
    SyncExecutorRequest,
)
from nodeplane.protocol.json_values import JsonLimits, json_value_problem
from nodeplane.protocol.names import MAX_NODE_NAME_LENGTH, is_valid_node_name, node_name_problem
from nodeplane.protocol.observed import ObservedNodeState, ObservedProcess
from nodeplane.protocol.phase import derive_node_phase
from nodeplane.protocol.runtime_events import RuntimeEventType
from nodeplane.protocol.spec import (
    AgentHints,
    ClientSelection,
    NodeSpec,
    OperatorHints,
    Overrides,
    ResourceSpec,
    StorageSpec,
)
from nodeplane.protocol.spec_bounds import SpecProblem, spec_bound_problems
from nodeplane.protocol.text import unstorable_text_problem
from nodeplane.protocol.times import datetime_problem

__all__ = [
    "INSTANCE_CONFLICT_CODE",
    "INSTANCE_HEADER",
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
    "JsonLimits",
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
    "RuntimeEventType",
    "ServiceType",
    "SpecProblem",
    "StorageSpec",
    "SyncExecutorRequest",
    "datetime_problem",
    "derive_node_phase",
    "is_valid_node_name",
    "json_value_problem",
    "managed_override_offenders",
    "node_name_problem",
    "override_problems",
    "spec_bound_problems",
    "unstorable_text_problem",
    "unsupported_reason",
]
