"""What an executor observes of a node: raw per-process status plus optional sync metrics."""

from pydantic import Field

from nodeplane.protocol.enums import ProcessStatus
from nodeplane.protocol.wire import WireModel


class ObservedProcess(WireModel):
    """One process of a node as the executor sees it; metrics are absent until first probed."""

    role: str = Field(max_length=64)
    status: ProcessStatus
    message: str | None = Field(default=None, max_length=4096)
    height: int | None = Field(default=None, ge=0)
    network_height: int | None = Field(default=None, ge=0)
    peers: int | None = Field(default=None, ge=0)
    sync_progress: float | None = Field(default=None, ge=0.0, le=1.0)
    disk_total_bytes: int | None = Field(default=None, ge=0)
    disk_available_bytes: int | None = Field(default=None, ge=0)
    cpu_seconds: float | None = Field(default=None, ge=0.0)
    memory_bytes: int | None = Field(default=None, ge=0)
    pid: int | None = Field(default=None, ge=0)


class ObservedNodeState(WireModel):
    """The latest observation of a node; `revision` is the spec revision the executor applied."""

    revision: int = Field(ge=0)
    processes: list[ObservedProcess] = Field(default_factory=list, max_length=32)
    apply_error: str | None = Field(default=None, max_length=8192)
