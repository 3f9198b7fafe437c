"""Wire types of the executor ↔ control-plane protocol (DESIGN §4)."""

import uuid
from typing import Annotated

from pydantic import BeforeValidator, Field

from nodeplane.protocol.capabilities import ExecutorCapabilities
from nodeplane.protocol.enums import EventLevel, ExecutorKind
from nodeplane.protocol.json_values import MAX_JSON_INTEGER, JsonPayload
from nodeplane.protocol.observed import ObservedNodeState
from nodeplane.protocol.runtime_events import RuntimeEventType, runtime_event_type
from nodeplane.protocol.spec import NodeSpec, Version
from nodeplane.protocol.text import StorableText
from nodeplane.protocol.times import BoundedDateTime
from nodeplane.protocol.wire import WireModel

MAX_POLL_WAIT_SECONDS = 30.0
MAX_HOST_CPU_CORES = 1_000_000.0
MAX_EVENT_MESSAGE_LENGTH = 4096
# The HTTP header that names the agent process (its instance id) on every executor call.
INSTANCE_HEADER = "Nodeplane-Instance"
# The error code of a call refused because another instance of the executor is live.
INSTANCE_CONFLICT_CODE = "executor_instance_conflict"
# How many earlier instances of one data directory an agent names as its predecessors.
MAX_PREVIOUS_INSTANCES = 16


class HostResources(WireModel):
    """What the executor's host (or cluster) offers."""

    cpu_cores: float | None = Field(default=None, ge=0.0, le=MAX_HOST_CPU_CORES)
    memory_bytes: int | None = Field(default=None, ge=0, le=MAX_JSON_INTEGER)
    disk_total_bytes: int | None = Field(default=None, ge=0, le=MAX_JSON_INTEGER)
    disk_available_bytes: int | None = Field(default=None, ge=0, le=MAX_JSON_INTEGER)


class NodeObservation(WireModel):
    """The observed state of one hosted node, keyed by node id."""

    node_id: uuid.UUID
    observed: ObservedNodeState


class SyncExecutorRequest(WireModel):
    """Heartbeat: who the executor is, what it can run, and what it observes.

    `instance_id` names the agent process (a new one per start): the control plane lets one live
    instance act for an executor and refuses the others (a cloned host). `previous_instance_ids`
    are the instances that ran before this one on the same data directory and boot of the same
    host (newest first): a restart succeeds them at once instead of waiting out the heartbeat
    timeout. Both are optional, so agents older than the rule still sync.
    """

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    kind: ExecutorKind
    version: Version
    capabilities: ExecutorCapabilities = Field(default_factory=ExecutorCapabilities)
    resources: HostResources = Field(default_factory=HostResources)
    nodes: list[NodeObservation] = Field(default_factory=list, max_length=1000)
    instance_id: uuid.UUID | None = None
    previous_instance_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=MAX_PREVIOUS_INSTANCES
    )


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


def _event_type(raw: object) -> object:
    return runtime_event_type(raw) if isinstance(raw, str) else raw


class RuntimeEvent(WireModel):
    """Something the executor's runtime saw: a crash, an init failure, a sync error.

    `type` is one of RuntimeEventType (the two pre-namespace names of older agents are mapped);
    `occurred_at` is the executor's claim, which the control plane keeps in the payload.
    """

    node_id: uuid.UUID | None = None
    type: Annotated[RuntimeEventType, BeforeValidator(_event_type)]
    level: EventLevel = EventLevel.INFO
    message: StorableText = Field(max_length=MAX_EVENT_MESSAGE_LENGTH)
    payload: JsonPayload = Field(default_factory=dict)
    occurred_at: BoundedDateTime | None = None
