"""Wire types of the executor ↔ control-plane protocol (DESIGN §4)."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from nodeplane.protocol.capabilities import ExecutorCapabilities
from nodeplane.protocol.enums import EventLevel, ExecutorKind
from nodeplane.protocol.observed import ObservedNodeState
from nodeplane.protocol.spec import NodeSpec
from nodeplane.protocol.wire import WireModel

MAX_POLL_WAIT_SECONDS = 30.0


class HostResources(WireModel):
    """What the executor's host (or cluster) offers."""

    cpu_cores: float | None = None
    memory_bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_available_bytes: int | None = None


class NodeObservation(WireModel):
    """The observed state of one hosted node, keyed by node id."""

    node_id: uuid.UUID
    observed: ObservedNodeState


class SyncExecutorRequest(WireModel):
    """Heartbeat: who the executor is, what it can run, and what it observes."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    kind: ExecutorKind
    version: str = Field(max_length=64)
    capabilities: ExecutorCapabilities = Field(default_factory=ExecutorCapabilities)
    resources: HostResources = Field(default_factory=HostResources)
    nodes: list[NodeObservation] = Field(default_factory=list, max_length=1000)


class KnownRevision(WireModel):
    """A node the executor holds, at the revision it holds."""

    node_id: uuid.UUID
    revision: int = Field(ge=0)
    deleted: bool = False


class AssignedNodeSpec(WireModel):
    """A spec assigned to the executor; `deleted` marks a tombstone to tear down."""

    node_id: uuid.UUID
    # Empty only for a node that is already gone from the control plane.
    name: str = Field(max_length=63, pattern=r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$")
    revision: int
    spec: NodeSpec | None
    deleted: bool = False
    retain_data: bool = False


class RuntimeEvent(WireModel):
    """Something the executor's runtime saw: a crash, an init failure, a sync error."""

    node_id: uuid.UUID | None = None
    type: str = Field(min_length=1, max_length=128, pattern=r"^[a-z][a-z0-9_.-]*$")
    level: EventLevel = EventLevel.INFO
    message: str = Field(max_length=4096)
    payload: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime | None = None
