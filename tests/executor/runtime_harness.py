"""A runtime wired to a scripted backend and control plane, for bookkeeping tests (no I/O).

The issue allows a fake backend for these tests only: they check the queue and runtime
bookkeeping (who is applied when, what is reported, what is retried), not what a backend does.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from nodeplane.executor.controlplane_client import ControlPlaneClient
from nodeplane.executor.runtime.backend import LogsUnavailable
from nodeplane.executor.runtime.local_state import LocalState
from nodeplane.executor.runtime.runtime import ExecutorRuntime, Intervals
from nodeplane.protocol import (
    AssignedNodeSpec,
    ExecutorCapabilities,
    ExecutorKind,
    HostResources,
    KnownRevision,
    NodeSpec,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
    SyncExecutorRequest,
)

SPEC = NodeSpec.model_validate(
    {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": "0.21.2.1"}},
    }
)

FAST = Intervals(
    heartbeat=0.02,
    reconcile=0.05,
    report=0.02,
    metrics=0.02,
    poll_wait=0.05,
    retry=0.01,
    housekeeping=0.01,
    node_retry_base=0.02,
    node_retry_cap=0.1,
    observe_timeout=1.0,
)


def assigned(
    name: str, revision: int = 1, *, node_id: UUID | None = None, deleted: bool = False
) -> AssignedNodeSpec:
    """A spec for node `name` (a stable id per name unless given)."""
    return AssignedNodeSpec(
        node_id=node_id or uuid.uuid5(uuid.NAMESPACE_DNS, name),
        name=name,
        revision=revision,
        spec=SPEC,
        deleted=deleted,
    )


@dataclass
class ScriptedBackend:
    """Records calls; per node name, an apply/teardown/observe can block or raise."""

    kind: ExecutorKind = ExecutorKind.AGENT
    applied: list[tuple[str, int]] = field(default_factory=list)
    torn_down: list[str] = field(default_factory=list)
    housekeeping_calls: int = 0
    # name -> an event the call waits for (cleared: blocks; set: passes)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    # name -> what apply/teardown/observe raises
    apply_raises: dict[str, BaseException] = field(default_factory=dict)
    teardown_raises: dict[str, BaseException] = field(default_factory=dict)
    observe_raises: dict[str, BaseException] = field(default_factory=dict)
    housekeeping_raises: BaseException | None = None
    events: list[RuntimeEvent] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)  # nodes worked on twice at once
    # name -> the status (and message) observe reports for its process (default: running)
    statuses: dict[str, tuple[ProcessStatus, str | None]] = field(default_factory=dict)

    def capabilities(self) -> ExecutorCapabilities:
        return ExecutorCapabilities()

    def log_file(self, node: AssignedNodeSpec, role: str) -> Path:
        raise LogsUnavailable("the scripted backend keeps no logs")

    def resources(self) -> HostResources:
        return HostResources()

    async def _enter(self, name: str) -> None:
        self.active[name] = self.active.get(name, 0) + 1
        if self.active[name] > 1:
            self.overlaps.append(name)
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()

    def _leave(self, name: str) -> None:
        self.active[name] -= 1

    async def apply(self, node: AssignedNodeSpec) -> None:
        await self._enter(node.name)
        try:
            if (exc := self.apply_raises.get(node.name)) is not None:
                raise exc
            self.applied.append((node.name, node.revision))
        finally:
            self._leave(node.name)

    async def teardown(self, node: AssignedNodeSpec) -> None:
        await self._enter(node.name)
        try:
            if (exc := self.teardown_raises.get(node.name)) is not None:
                raise exc
            self.torn_down.append(node.name)
        finally:
            self._leave(node.name)

    async def observe(self, node: AssignedNodeSpec) -> list[ObservedProcess]:
        if (exc := self.observe_raises.get(node.name)) is not None:
            raise exc
        status, message = self.statuses.get(node.name, (ProcessStatus.RUNNING, None))
        return [ObservedProcess(role="node", status=status, message=message)]

    async def housekeeping(self) -> None:
        self.housekeeping_calls += 1
        if self.housekeeping_raises is not None:
            raise self.housekeeping_raises

    def drain_events(self) -> list[RuntimeEvent]:
        events, self.events = self.events, []
        return events


class ScriptedControlPlane(ControlPlaneClient):
    """A control plane in memory: specs pushed by the test, syncs and events recorded."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "unused")
        self.specs: asyncio.Queue[list[AssignedNodeSpec]] = asyncio.Queue()
        self.syncs: list[SyncExecutorRequest] = []
        self.events: list[RuntimeEvent] = []
        self.confirmed: list[UUID] = []
        self.down: BaseException | None = None  # raised by every call while set
        self.sync_attempts: list[float] = []  # when each sync was sent (monotonic), failed too

    def _check(self) -> None:
        if self.down is not None:
            raise self.down

    async def sync(self, request: SyncExecutorRequest) -> dict[str, Any]:
        self.sync_attempts.append(time.monotonic())
        self._check()
        self.syncs.append(request)
        return {"executor": {"id": "e", "name": request.name}, "rejected": []}

    async def poll_specs(
        self, known: Sequence[KnownRevision], wait_seconds: float
    ) -> list[AssignedNodeSpec]:
        self._check()
        specs: list[AssignedNodeSpec] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                specs = await self.specs.get()
        self._check()  # a long-poll held when the control plane went away fails, too
        return specs

    async def poll_log_sessions(self, known: Sequence[UUID], wait_seconds: float) -> list[Any]:
        """No live-log sessions: the poll is held its whole wait."""
        self._check()
        await asyncio.sleep(wait_seconds)
        return []

    async def confirm_teardown(self, node_id: UUID) -> bool:
        self._check()
        self.confirmed.append(node_id)
        return True

    async def report_events(self, events: Sequence[RuntimeEvent]) -> int:
        self._check()
        self.events += events
        return len(events)

    def observed(self, node_id: UUID) -> Any:
        """The latest observation of `node_id` sent in a sync, or None."""
        for request in reversed(self.syncs):
            for obs in request.nodes:
                if obs.node_id == node_id:
                    return obs.observed
        return None


@dataclass
class Harness:
    """A running runtime with its scripted parts."""

    runtime: ExecutorRuntime
    backend: ScriptedBackend
    plane: ScriptedControlPlane
    task: asyncio.Task[None]

    def push(self, *specs: AssignedNodeSpec) -> None:
        """The control plane hands out these specs on the agent's next poll."""
        self.plane.specs.put_nowait(list(specs))


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, backend: ScriptedBackend | None = None, intervals: Intervals = FAST
) -> AsyncIterator[Harness]:
    """A runtime running its loops until the block ends; fails if it ended by itself."""
    backend = backend or ScriptedBackend()
    plane = ScriptedControlPlane()
    runtime = ExecutorRuntime(
        name="host-1",
        version="test",
        client=plane,
        backend=backend,
        state=LocalState(tmp_path / "state" / "specs.json"),
        intervals=intervals,
    )
    task = asyncio.create_task(runtime.run())
    try:
        yield Harness(runtime, backend, plane, task)
        assert not task.done(), f"the runtime ended: {task}"
    finally:
        for gate in backend.gates.values():
            gate.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await plane.aclose()


async def eventually(check: Callable[[], object], within: float = 5.0) -> Any:
    """Poll `check` until it is truthy (its value), or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s: {check}")
        await asyncio.sleep(0.005)
