"""The executor's loops: spec long-poll, reconciler, reporter and heartbeat (DESIGN §5).

Each loop is convergent rather than transactional: a tick starts from what the world and the held
specs say now, so a partial apply, a lost report or a restart of the executor heals on a later tick.
"""

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import httpx
import structlog

from nodeplane.executor.controlplane_client import ControlPlaneClient, ControlPlaneError
from nodeplane.executor.runtime.backend import ApplyError, Backend
from nodeplane.executor.runtime.local_state import HeldNode, LocalState
from nodeplane.protocol import (
    INSTANCE_CONFLICT_CODE,
    EventLevel,
    NodeObservation,
    ObservedNodeState,
    RuntimeEvent,
    SyncExecutorRequest,
)
from nodeplane.protocol.executor_api import MAX_EVENT_MESSAGE_LENGTH
from nodeplane.protocol.observed import MAX_APPLY_ERROR_LENGTH
from nodeplane.protocol.runtime_events import RuntimeEventType
from nodeplane.protocol.text import storable_excerpt

log = structlog.get_logger(__name__)

_NETWORK_ERRORS = (httpx.HTTPError, ControlPlaneError, OSError)


@dataclass(frozen=True)
class Intervals:
    """Loop cadences in seconds."""

    heartbeat: float = 5.0
    reconcile: float = 5.0
    report: float = 10.0
    poll_wait: float = 25.0
    retry: float = 2.0


class _Trigger:
    """A wake-up that coalesces: many `fire()`s before a `wait()` wake it once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        self._event.clear()


class ExecutorRuntime:
    """Runs one executor: keeps held specs applied and the control plane informed."""

    def __init__(
        self,
        *,
        name: str,
        version: str,
        client: ControlPlaneClient,
        backend: Backend,
        state: LocalState,
        intervals: Intervals | None = None,
        instance_id: UUID | None = None,
        previous_instance_ids: Sequence[UUID] = (),
    ) -> None:
        self.name = name
        # This process, and the ones before it on the same data directory (instance_lock.py).
        self.instance_id = instance_id
        self.previous_instance_ids = list(previous_instance_ids)
        self.version = version
        self.client = client
        self.backend = backend
        self.state = state
        self.intervals = intervals or Intervals()
        self._registered = asyncio.Event()
        self._reconcile_now = _Trigger()
        self._report_now = _Trigger()
        self._sync_now = _Trigger()
        self._observations: dict[UUID, ObservedNodeState] = {}
        self._pending_events: list[RuntimeEvent] = []
        self._apply_lock = asyncio.Lock()
        # Why the control plane refuses this process (another instance of the executor is
        # live); while set, nothing is applied: what runs is left as it is.
        self.refused: str | None = None
        self._first_sync = asyncio.Event()

    async def run(self) -> None:
        """Run every loop until cancelled."""
        self.state.load()
        log.info("executor.starting", name=self.name, nodes=len(self.state.nodes))
        loops = [
            self._heartbeat_loop(),
            self._poll_loop(),
            self._reconcile_loop(),
            self._report_loop(),
        ]
        async with asyncio.TaskGroup() as group:
            for loop in loops:
                group.create_task(loop)

    # ---- heartbeat --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.sync_once()
            self._first_sync.set()
            await self._sync_now.wait(self.intervals.heartbeat)

    async def sync_once(self) -> bool:
        """One syncExecutor call with the latest observations; then flush runtime events."""
        request = SyncExecutorRequest(
            name=self.name,
            kind=self.backend.kind,
            version=self.version,
            # Detecting capabilities may run client binaries: keep it off the event loop.
            capabilities=await asyncio.to_thread(self.backend.capabilities),
            resources=self.backend.resources(),
            nodes=[
                NodeObservation(node_id=nid, observed=obs)
                for nid, obs in self._observations.items()
                if nid in self.state.nodes
            ],
            instance_id=self.instance_id,
            previous_instance_ids=self.previous_instance_ids,
        )
        try:
            result = await self.client.sync(request)
        except ControlPlaneError as exc:
            if exc.code == INSTANCE_CONFLICT_CODE:
                self._refuse(exc.message)
            else:
                log.warning("sync.failed", error=str(exc))
            return False
        except _NETWORK_ERRORS as exc:
            log.warning("sync.failed", error=str(exc))
            return False
        if self.refused is not None:
            log.info("executor.instance_accepted", instance_id=str(self.instance_id))
            self.refused = None
            self._reconcile_now.fire()
        if not self._registered.is_set():
            log.info("executor.registered", executor_id=result["executor"]["id"])
            self._registered.set()
        for rejected in result.get("rejected", []):
            log.warning(
                "sync.observation_rejected", node_id=rejected["nodeId"], reason=rejected["reason"]
            )
        await self._flush_events()
        return True

    def _refuse(self, message: str) -> None:
        """Another instance of this executor is live: stop applying, say so once."""
        if self.refused is None:
            log.error("executor.instance_refused", instance_id=str(self.instance_id), error=message)
        self.refused = message

    async def _flush_events(self) -> None:
        self._pending_events += self.backend.drain_events()
        if not self._pending_events:
            return
        batch, self._pending_events = self._pending_events[:100], self._pending_events[100:]
        try:
            await self.client.report_events(batch)
        except ControlPlaneError as exc:
            if exc.code == "invalid_input":
                # Refused as a whole and for good (say, a type this control plane does not know
                # yet): sending it again would hold back every later event.
                log.error("events.refused", error=str(exc), count=len(batch))
                return
            log.warning("events.report_failed", error=str(exc), count=len(batch))
            self._pending_events = batch + self._pending_events
        except _NETWORK_ERRORS as exc:
            log.warning("events.report_failed", error=str(exc), count=len(batch))
            self._pending_events = batch + self._pending_events

    # ---- spec long-poll ---------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        await self._registered.wait()
        while True:
            try:
                specs = await self.client.poll_specs(self.state.known(), self.intervals.poll_wait)
            except ControlPlaneError as exc:
                if exc.code == INSTANCE_CONFLICT_CODE:
                    self._refuse(exc.message)
                else:
                    log.warning("poll.failed", error=str(exc))
                await asyncio.sleep(self.intervals.retry)
                continue
            except _NETWORK_ERRORS as exc:
                log.warning("poll.failed", error=str(exc))
                await asyncio.sleep(self.intervals.retry)
                continue
            if specs:
                for spec in specs:
                    log.info(
                        "spec.received",
                        node=spec.name,
                        revision=spec.revision,
                        deleted=spec.deleted,
                    )
                    self.state.receive(spec)
                self.state.save()
                self._reconcile_now.fire()

    # ---- reconciler -------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        # Not before the control plane has had its say: a copy of this host (cloned disk, held
        # specs and all) must learn it is refused before it starts or renders anything.
        await self._first_sync.wait()
        while True:
            await self.reconcile_once()
            await self._reconcile_now.wait(self.intervals.reconcile)

    async def reconcile_once(self) -> None:
        """Converge every held node; deleted nodes are torn down and confirmed.

        Nothing happens while the control plane refuses this process as a second instance.
        """
        if self.refused is not None:
            return
        async with self._apply_lock:
            try:
                await self.backend.housekeeping()
            except Exception as exc:  # housekeeping must never stop the nodes from being applied
                log.warning("housekeeping.failed", error=str(exc))
            changed = False
            for node_id, held in list(self.state.nodes.items()):
                if held.assigned.deleted:
                    changed |= await self._teardown(node_id, held)
                else:
                    changed |= await self._apply(held)
            if changed:
                self.state.save()
                self._report_now.fire()

    async def _apply(self, held: HeldNode) -> bool:
        spec = held.assigned
        try:
            await self.backend.apply(spec)
        except ApplyError as exc:
            message = str(exc)
            first_time = held.failed_revision != spec.revision or held.apply_error != message
            held.failed_revision, held.apply_error = spec.revision, message
            if first_time:
                log.error("apply.failed", node=spec.name, revision=spec.revision, error=message)
                self._pending_events.append(
                    RuntimeEvent(
                        node_id=spec.node_id,
                        type=RuntimeEventType.NODE_APPLY_FAILED,
                        level=EventLevel.ERROR,
                        message=storable_excerpt(
                            f"{spec.name}: cannot apply revision {spec.revision}: {message}",
                            MAX_EVENT_MESSAGE_LENGTH,
                        ),
                        payload={"revision": spec.revision},
                    )
                )
            return first_time
        if held.applied_revision != spec.revision or held.apply_error is not None:
            log.info("apply.done", node=spec.name, revision=spec.revision)
            held.applied_revision = spec.revision
            held.failed_revision, held.apply_error = None, None
            return True
        return False

    async def _teardown(self, node_id: UUID, held: HeldNode) -> bool:
        if not held.torn_down:
            try:
                await self.backend.teardown(held.assigned)
            except ApplyError as exc:
                log.error("teardown.failed", node=held.name, error=str(exc))
                return False
            held.torn_down = True
            log.info("teardown.done", node=held.name, retain_data=held.assigned.retain_data)
            self.state.save()
        try:
            await self.client.confirm_teardown(node_id)
        except _NETWORK_ERRORS as exc:
            log.warning("teardown.confirm_failed", node=held.name, error=str(exc))
            return False
        del self.state.nodes[node_id]
        self._observations.pop(node_id, None)
        return True

    # ---- reporter ---------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        await self._first_sync.wait()
        while True:
            await self.report_once()
            self._sync_now.fire()
            await self._report_now.wait(self.intervals.report)

    async def report_once(self) -> None:
        """Observe every live held node; the next heartbeat carries the result (nothing while
        refused: the control plane would not take it)."""
        if self.refused is not None:
            return
        observations: dict[UUID, ObservedNodeState] = {}
        for node_id, held in list(self.state.nodes.items()):
            if held.assigned.deleted:
                continue
            try:
                processes = await self.backend.observe(held.assigned)
            except Exception as exc:  # one node's probe must not stop the others' reports
                log.warning("observe.failed", node=held.name, error=str(exc))
                continue
            failed = held.apply_error is not None and held.failed_revision is not None
            observations[node_id] = ObservedNodeState(
                revision=held.failed_revision
                if failed and held.failed_revision
                else held.applied_revision,
                processes=processes,
                apply_error=storable_excerpt(held.apply_error, MAX_APPLY_ERROR_LENGTH)
                if held.apply_error is not None
                else None,
            )
        self._observations = observations
