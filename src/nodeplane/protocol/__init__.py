"""The wire contract shared by the control plane and the executors: pure models and functions.

Names are imported from their submodules on first use, so a program that needs one enum (the
CLI, which must start fast) does not build every model of the protocol.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Exported name -> the submodule that defines it.
_SOURCES = {
    "INSTANCE_CONFLICT_CODE": "executor_api",
    "INSTANCE_HEADER": "executor_api",
    "MAX_NODE_NAME_LENGTH": "names",
    "MAX_POLL_WAIT_SECONDS": "executor_api",
    "AgentHints": "spec",
    "AssignedNodeSpec": "executor_api",
    "ChainCapability": "capabilities",
    "ClientCapability": "capabilities",
    "ClientSelection": "spec",
    "DesiredState": "enums",
    "EventLevel": "enums",
    "EventSource": "enums",
    "ExecutorCapabilities": "capabilities",
    "ExecutorKind": "enums",
    "HostResources": "executor_api",
    "JsonLimits": "json_values",
    "KnownRevision": "executor_api",
    "LifecycleAction": "enums",
    "NodeObservation": "executor_api",
    "NodePhase": "enums",
    "NodeSpec": "spec",
    "NodeType": "enums",
    "ObservedNodeState": "observed",
    "ObservedProcess": "observed",
    "OperatorHints": "spec",
    "Overrides": "spec",
    "ProcessStatus": "enums",
    "ResourceDefaults": "capabilities",
    "ResourceSpec": "spec",
    "RestartPolicy": "enums",
    "RoleCapability": "capabilities",
    "RuntimeEvent": "executor_api",
    "RuntimeEventType": "runtime_events",
    "ServiceType": "enums",
    "SpecProblem": "spec_bounds",
    "StorageSpec": "spec",
    "SyncExecutorRequest": "executor_api",
    "datetime_problem": "times",
    "derive_node_phase": "phase",
    "is_valid_node_name": "names",
    "json_value_problem": "json_values",
    "managed_override_offenders": "capabilities",
    "node_name_problem": "names",
    "override_problems": "capabilities",
    "spec_bound_problems": "spec_bounds",
    "unstorable_text_problem": "text",
    "unsupported_reason": "capabilities",
}

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


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{source}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])
