"""The executor's loops: heartbeat, spec long-poll, per-node reconcile, supervision, reports.

Reconciling is per node, in the shape of controller-runtime (DESIGN §5): a node's id goes into a
work queue when a spec for it arrives, on every periodic resync, and (with per-node exponential
backoff) after a failure; each key taken from the queue is reconciled by a task of its own, and
the queue never hands out a key that is being processed, so one node is never applied, torn
down or re-applied concurrently with itself while any number of *different* nodes proceed side
by side. A slow or stuck node (a stop waiting out a 600 s timeout) holds only its own key.

The backend's housekeeping (the process driver's restart policies) runs in a loop of its own,
never under a node's apply. Every loop is convergent rather than transactional: a pass starts
from what the world and the held specs say now, so a partial apply, a lost report or a restart
of the executor heals on a later pass.

Failures are contained: any exception while applying, tearing down or observing one node becomes
that node's `applyError` and one runtime event, and the node is retried with backoff; nothing a
node does ends the executor.
"""

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog

from nodeplane.executor.controlplane_client import ControlPlaneClient, ControlPlaneError
from nodeplane.executor.runtime.backend import ApplyError, Backend
from nodeplane.executor.runtime.health import judge_health
from nodeplane.executor.runtime.local_state import HeldNode, LocalState
from nodeplane.executor.runtime.log_sessions import LogSessions
from nodeplane.executor.runtime.metrics import (
    APPLIED,
    APPLY_FAILED,
    TEARDOWN_FAILED,
    TORN_DOWN,
    ExecutorMetrics,
)
from nodeplane.executor.runtime.reachability import JitteredBackoff, Reachability
from nodeplane.executor.runtime.workqueue import ExponentialBackoff, QueueShutDown, WorkQueue
from nodeplane.protocol import (
    INSTANCE_CONFLICT_CODE,
    AssignedNodeSpec,
    EventLevel,
    ExecutorCapabilities,
    HostResources,
    NodeObservation,
    ObservedNodeState,
    ObservedProcess,
    RuntimeEvent,
    SyncExecutorRequest,
)
from nodeplane.protocol.executor_api import MAX_EVENT_MESSAGE_LENGTH
from nodeplane.protocol.observed import MAX_APPLY_ERROR_LENGTH, differs_beyond_metrics
from nodeplane.protocol.runtime_events import RuntimeEventType
from nodeplane.protocol.spec_edit import edit_problems
from nodeplane.protocol.text import storable_excerpt

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Intervals:
    """Loop cadences and retry bounds, in seconds."""

    heartbeat: float = 5.0
    # How often every held node is reconciled again although nothing asked (the resync).
    reconcile: float = 5.0
    report: float = 10.0
    # How often new values of a node's metrics (height, peers, CPU, memory, disk) are sent when
    # nothing else about it changed; anything else observed goes with the next heartbeat. Between
    # times the heartbeat repeats the observation it sent, which the control plane answers from
    # one read (a fleet's metrics would otherwise make every heartbeat a write; issue 8).
    metrics: float = 30.0
    poll_wait: float = 25.0
    # Calls to an unreachable control plane are retried after a jittered delay from `retry`
    # doubling up to `outage_retry_cap` (None: four heartbeats).
    retry: float = 2.0
    outage_retry_cap: float | None = None
    # The backend's supervision (restart policies); None: as often as `reconcile`.
    housekeeping: float | None = None
    # A failed node is retried after node_retry_base, doubling up to node_retry_cap.
    node_retry_base: float = 0.5
    node_retry_cap: float = 30.0
    # How long one node's observation may take before it counts as failed.
    observe_timeout: float = 30.0


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


def _unless_only_metrics_moved(
    sent: ObservedNodeState | None, fresh: ObservedNodeState
) -> ObservedNodeState:
    """The observation last sent if `fresh` differs from it only in metric values, else `fresh`."""
    if sent is not None and not differs_beyond_metrics(sent, fresh):
        return sent
    return fresh


def describe_error(exc: BaseException) -> str:
    """What an exception says to an operator: an ApplyError's own words, else type and text."""
    if isinstance(exc, ApplyError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ExecutorRuntime:
    """Runs one executor: keeps held specs applied, supervised and the control plane informed."""

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
        metrics: ExecutorMetrics | None = None,
    ) -> None:
        self.name = name
        # Counted whether or not anything serves them (serve_metrics): a few increments.
        self.metrics = metrics or ExecutorMetrics(name, backend.kind.value, version)
        # This process, and the ones before it on the same data directory (instance_lock.py).
        self.instance_id = instance_id
        self.previous_instance_ids = list(previous_instance_ids)
        self.version = version
        self.client = client
        self.backend = backend
        self.state = state
        self.intervals = intervals or Intervals()
        self.queue: WorkQueue[UUID] = WorkQueue(
            ExponentialBackoff(
                base=self.intervals.node_retry_base, cap=self.intervals.node_retry_cap
            )
        )
        outage_cap = self.intervals.outage_retry_cap or 4 * self.intervals.heartbeat
        self.reachability = Reachability()
        self._sync_backoff = JitteredBackoff(base=self.intervals.retry, cap=outage_cap)
        self._poll_backoff = JitteredBackoff(base=self.intervals.retry, cap=outage_cap)
        self._registered = asyncio.Event()
        self._report_now = _Trigger()
        self._sync_now = _Trigger()
        self._observations: dict[UUID, ObservedNodeState] = {}
        # When the metrics were last sent fresh (monotonic); None: not yet.
        self._metrics_sent_at: float | None = None
        # The host's resources as last sent, and whether the metrics interval has come since.
        self._resources: HostResources | None = None
        self._resources_due = False
        # Why observing a node failed (kept apart from apply errors, which a good apply clears).
        self._observe_errors: dict[UUID, str] = {}
        # Nodes this process has reconciled at least once. Until then a node is not reported:
        # what an agent that just started sees (a unit stopped by `up`'s Ctrl-C, say) is about
        # to change, and reporting it would flash the node through `error` in the feed.
        self._reconciled: set[UUID] = set()
        self._teardown_errors: dict[UUID, str] = {}
        self._pending_events: list[RuntimeEvent] = []
        # Belt and braces beside the queue's guarantee: a node is never reconciled twice at once,
        # even by a caller that does not go through the queue.
        self._node_locks: dict[UUID, asyncio.Lock] = {}
        self._housekeeping_error: str | None = None
        self._save_error: str | None = None
        self._request_error: str | None = None
        # The control plane's retry hint with the last failed sync (busy), if it gave one.
        self._sync_retry_after: float | None = None
        # Why the control plane refuses this process (another instance of the executor is
        # live); while set, nothing is applied or observed: what runs is left as it is.
        self.refused: str | None = None
        self._first_sync = asyncio.Event()
        # Live-log sessions, learnt of on a long-poll of their own (the spec poll is untouched).
        self.log_sessions = LogSessions(
            client,
            backend,
            self._held_spec,
            poll_wait=self.intervals.poll_wait,
            retry=self.intervals.retry,
            paused=lambda: self.refused is not None,
        )

    def _held_spec(self, node_id: UUID) -> AssignedNodeSpec | None:
        held = self.state.nodes.get(node_id)
        return held.assigned if held is not None else None

    async def _log_loop(self) -> None:
        await self._registered.wait()
        await self.log_sessions.run()

    async def run(self) -> None:
        """Run every loop until cancelled; only a loop's own bug ends it, never a node's failure."""
        self.load_state()
        log.info("executor.starting", name=self.name, nodes=len(self.state.nodes))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat_loop(), name="heartbeat")
                group.create_task(self._poll_loop(), name="spec-poll")
                group.create_task(self._log_loop(), name="log-poll")
                group.create_task(self._resync_loop(), name="resync")
                group.create_task(self._housekeeping_loop(), name="housekeeping")
                group.create_task(self._report_loop(), name="report")
                group.create_task(self._dispatch_loop(group), name="dispatch")
        finally:
            self.queue.shutdown()

    def load_state(self) -> None:
        """Load the held specs; an unreadable file is moved aside and reported as an event."""
        moved_to = self.state.load()
        if moved_to is None:
            return
        self.queue_event(
            RuntimeEvent(
                type=RuntimeEventType.EXECUTOR_STATE_REBUILT,
                level=EventLevel.WARN,
                message=storable_excerpt(
                    f"{self.state.path} was unreadable and was moved to {moved_to.name}; "
                    "every node's spec is fetched again and its running processes adopted",
                    MAX_EVENT_MESSAGE_LENGTH,
                ),
                payload={"path": str(self.state.path), "movedTo": str(moved_to)},
            )
        )

    # ---- heartbeat --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            ok = await self.sync_once()
            self._first_sync.set()
            if ok or self.refused is not None:
                # A refusal is an answer: ask again at the normal cadence, not an outage's.
                self._sync_backoff.reset()
                await self._sync_now.wait(self.intervals.heartbeat)
            else:
                # Triggers (a report ready) do not shorten an outage's backoff.
                await asyncio.sleep(self._sync_backoff.next_delay(self._sync_retry_after))

    async def _sync_request(self) -> SyncExecutorRequest:
        """The syncExecutor input: who we are, what we offer, what we observe."""
        return SyncExecutorRequest(
            name=self.name,
            kind=self.backend.kind,
            version=self.version,
            # Detecting capabilities may run client binaries: keep it off the event loop.
            capabilities=await asyncio.to_thread(self.backend.capabilities),
            resources=self._host_resources(),
            nodes=[
                NodeObservation(node_id=nid, observed=obs)
                for nid, obs in self._observations.items()
                if nid in self.state.nodes
            ],
            instance_id=self.instance_id,
            previous_instance_ids=self.previous_instance_ids,
        )

    def _host_resources(self) -> HostResources:
        """The host's resources as last read, read again once per metrics interval (with the
        nodes' metric values): free disk moves between any two readings on a busy host, and a
        heartbeat that carried it fresh each time would never repeat the one before."""
        if self._resources is None or self._resources_due:
            self._resources = self.backend.resources()
            self._resources_due = False
        return self._resources

    async def sync_once(self) -> bool:
        """One syncExecutor call with the latest observations; then flush runtime events.

        False when the call failed (the failure is logged once per outage, not per attempt).
        """
        try:
            request = await self._sync_request()
        except Exception as exc:  # detecting capabilities or resources: tried again next time
            if describe_error(exc) != self._request_error:
                self._request_error = describe_error(exc)
                log.exception("sync.request_failed")
            return False
        self._request_error = None
        started = self.reachability.clock()
        self._sync_retry_after = None
        try:
            result = await self.client.sync(request)
        except ControlPlaneError as exc:
            self._sync_retry_after = exc.retry_after
            if exc.code == INSTANCE_CONFLICT_CODE:
                self.reachability.succeeded(started)
                self._refuse(exc.message)
            else:
                self.reachability.failed("sync", describe_error(exc))
                log.debug("sync.failed", error=describe_error(exc))
            self.metrics.synced(False)
            return False
        except Exception as exc:  # any failure of the call: retried, never the executor's end
            self.reachability.failed("sync", describe_error(exc))
            log.debug("sync.failed", error=describe_error(exc))
            self.metrics.synced(False)
            return False
        self.reachability.succeeded(started)
        self.metrics.synced(True)
        if self.refused is not None:
            log.info("executor.instance_accepted", instance_id=str(self.instance_id))
            self.refused = None
            self.resync()
        if not self._registered.is_set():
            log.info("executor.registered", executor_id=result["executor"]["id"])
            self._registered.set()
        for rejected in result.get("rejected", []):
            log.warning(
                "sync.observation_rejected", node_id=rejected["nodeId"], reason=rejected["reason"]
            )
        await self._flush_events()
        return True

    def queue_event(self, event: RuntimeEvent) -> None:
        """Send `event` with the next heartbeat."""
        self._pending_events.append(event)
        self._count_events([event])

    def _count_events(self, events: list[RuntimeEvent]) -> None:
        if not events:  # most heartbeats drain nothing
            return
        names = {str(nid): held.name for nid, held in self.state.nodes.items()}
        self.metrics.events(events, names)

    def _refuse(self, message: str) -> None:
        """Another instance of this executor is live: stop applying, say so once."""
        if self.refused is None:
            log.error("executor.instance_refused", instance_id=str(self.instance_id), error=message)
        self.refused = message

    async def _flush_events(self) -> None:
        drained = self.backend.drain_events()
        self._count_events(drained)
        self._pending_events += drained
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
            self.reachability.failed("report_events", describe_error(exc))
            self._pending_events = batch + self._pending_events
        except Exception as exc:  # kept and sent with a later heartbeat
            self.reachability.failed("report_events", describe_error(exc))
            log.debug("events.report_failed", error=describe_error(exc), count=len(batch))
            self._pending_events = batch + self._pending_events

    # ---- spec long-poll ---------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        await self._registered.wait()
        while True:
            started = self.reachability.clock()
            try:
                specs = await self.client.poll_specs(self.state.known(), self.intervals.poll_wait)
            except ControlPlaneError as exc:
                if exc.code == INSTANCE_CONFLICT_CODE:
                    self.reachability.succeeded(started)
                    self._refuse(exc.message)
                    await asyncio.sleep(self.intervals.heartbeat)
                    continue
                self.reachability.failed("poll", describe_error(exc))
                log.debug("poll.failed", error=describe_error(exc))
                await asyncio.sleep(self._poll_backoff.next_delay())
                continue
            except Exception as exc:  # any failure of the call: retried after a backoff
                self.reachability.failed("poll", describe_error(exc))
                log.debug("poll.failed", error=describe_error(exc))
                await asyncio.sleep(self._poll_backoff.next_delay())
                continue
            self.reachability.succeeded(started)
            self._poll_backoff.reset()
            if specs:
                self.receive(specs)

    def receive(self, specs: list[AssignedNodeSpec]) -> None:
        """Hold the specs received and queue their nodes (a new spec gets a fresh backoff)."""
        for spec in specs:
            log.info("spec.received", node=spec.name, revision=spec.revision, deleted=spec.deleted)
            self.state.receive(spec)
        self._save_state()
        for spec in specs:
            if spec.node_id in self.state.nodes:
                self.queue.forget(spec.node_id)
                self.queue.add(spec.node_id)

    # ---- per-node reconcile -----------------------------------------------------------------

    async def _resync_loop(self) -> None:
        """Queue every held node each `reconcile` interval (crashes, drift, lost work heal)."""
        # Not before the control plane has had its say: a copy of this host (cloned disk, held
        # specs and all) must learn it is refused before it starts or renders anything.
        await self._first_sync.wait()
        while True:
            self.resync()
            await asyncio.sleep(self.intervals.reconcile)

    def resync(self) -> None:
        """Queue every held node, except those waiting out a failure's backoff."""
        for node_id in list(self.state.nodes):
            # A failing node comes back on its own backoff; resyncing it would defeat that.
            if self.queue.num_requeues(node_id) == 0:
                self.queue.add(node_id)

    async def _dispatch_loop(self, group: asyncio.TaskGroup) -> None:
        """Hand each key the queue releases to a task of its own: nodes never wait on each other.

        The queue never releases a key that is being processed, so there is at most one task per
        node; their number is bounded by the number of held nodes.
        """
        while True:
            try:
                node_id = await self.queue.get()
            except QueueShutDown:
                return
            group.create_task(self._process(node_id), name=f"reconcile-{node_id}")

    async def _process(self, node_id: UUID) -> None:
        try:
            await self.reconcile_node(node_id)
        except Exception:  # reconcile_node contains node errors; this is its own bug
            log.exception("reconcile.crashed", node_id=str(node_id))
            self.queue.add_rate_limited(node_id)
        finally:
            self.queue.done(node_id)

    async def reconcile_node(self, node_id: UUID) -> None:
        """Converge one node from what is held now: apply it, or tear it down if deleted.

        A failure (any exception) is recorded on the node and the node is queued again after its
        backoff; a success resets the backoff. Never raises for a node's failure.
        """
        if self.refused is not None:
            return  # another instance of this executor is live: leave what runs as it is
        lock = self._node_locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            held = self.state.nodes.get(node_id)
            if held is None:
                self.queue.forget(node_id)
                self._node_locks.pop(node_id, None)
                return
            started = time.perf_counter()
            if held.assigned.deleted:
                ok = await self._teardown(node_id, held)
                outcome = TORN_DOWN if ok else TEARDOWN_FAILED
            else:
                ok = await self._apply(held)
                outcome = APPLIED if ok else APPLY_FAILED
                self._reconciled.add(node_id)
            self.metrics.reconciled(outcome, time.perf_counter() - started, held.name)
        if node_id not in self.state.nodes:
            self._node_locks.pop(node_id, None)
        if ok:
            self.queue.forget(node_id)
        else:
            self.queue.add_rate_limited(node_id)

    async def _apply(self, held: HeldNode) -> bool:
        """Apply the held spec; True when it applied."""
        spec = held.assigned
        try:
            await self._check_edit(held)
            await self.backend.apply(spec)
        except Exception as exc:  # contained: the node's applyError, never the executor's end
            message = describe_error(exc)
            first_time = held.failed_revision != spec.revision or held.apply_error != message
            if first_time:
                held.failed_revision, held.apply_error = spec.revision, message
                log.error(
                    "apply.failed",
                    node=spec.name,
                    revision=spec.revision,
                    error=message,
                    # A traceback for the unexpected only: an ApplyError says all there is.
                    exc_info=None if isinstance(exc, ApplyError) else exc,
                )
                self.queue_event(
                    _node_event(
                        spec,
                        RuntimeEventType.NODE_APPLY_FAILED,
                        f"cannot apply revision {spec.revision}: {message}",
                    )
                )
                self._changed()
            return False
        if held.applied_revision != spec.revision or held.apply_error is not None:
            log.info("apply.done", node=spec.name, revision=spec.revision)
            if held.applied_revision != spec.revision:
                # The new revision's health window starts now.
                held.applied_at, held.health_error = datetime.now(UTC), None
            held.applied_revision = spec.revision
            held.applied_spec = spec.spec
            held.failed_revision, held.apply_error = None, None
            self._changed()
        return True

    async def _teardown(self, node_id: UUID, held: HeldNode) -> bool:
        """Tear the node down and confirm it; True when done (the node is no longer held)."""
        if not held.torn_down:
            try:
                await self.backend.teardown(held.assigned)
            except Exception as exc:  # contained, like an apply
                message = describe_error(exc)
                if self._teardown_errors.get(node_id) != message:
                    self._teardown_errors[node_id] = message
                    log.error(
                        "teardown.failed",
                        node=held.name,
                        error=message,
                        exc_info=None if isinstance(exc, ApplyError) else exc,
                    )
                    self.queue_event(
                        _node_event(
                            held.assigned,
                            RuntimeEventType.NODE_TEARDOWN_FAILED,
                            f"cannot tear down: {message}",
                        )
                    )
                    self._report_now.fire()
                return False
            self._teardown_errors.pop(node_id, None)
            held.torn_down = True
            log.info("teardown.done", node=held.name, retain_data=held.assigned.retain_data)
            self._save_state()
        try:
            await self.client.confirm_teardown(node_id)
        except Exception as exc:  # retried with the node's backoff
            self.reachability.failed("confirm_teardown", describe_error(exc))
            log.debug("teardown.confirm_failed", node=held.name, error=describe_error(exc))
            return False
        self.state.nodes.pop(node_id, None)
        self._observations.pop(node_id, None)
        self._reconciled.discard(node_id)
        self._observe_errors.pop(node_id, None)
        self._changed()
        return True

    def _changed(self) -> None:
        """Held state changed: save it and report soon."""
        self._save_state()
        self._report_now.fire()

    def _save_state(self) -> None:
        """Save the held specs; a failure (a full disk) is logged once and retried next change.

        The specs in memory stay right and the nodes keep being reconciled from them; only a
        restart of the executor before a save succeeds would fetch them again.
        """
        try:
            self.state.save()
        except OSError as exc:
            message = describe_error(exc)
            if message != self._save_error:
                self._save_error = message
                log.error("state.save_failed", path=str(self.state.path), error=message)
            return
        if self._save_error is not None:
            log.info("state.saved_again", path=str(self.state.path))
            self._save_error = None

    # ---- supervision ------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        every = self.intervals.housekeeping or self.intervals.reconcile
        while True:
            await self.housekeeping_once()
            await asyncio.sleep(every)

    async def housekeeping_once(self) -> None:
        """Let the backend supervise its processes; a failure is logged and reported once."""
        try:
            await self.backend.housekeeping()
        except Exception as exc:  # supervision must outlive any one failure of it
            message = describe_error(exc)
            if message != self._housekeeping_error:
                self._housekeeping_error = message
                log.error("housekeeping.failed", error=message, exc_info=exc)
                self.queue_event(
                    RuntimeEvent(
                        type=RuntimeEventType.EXECUTOR_HOUSEKEEPING_FAILED,
                        level=EventLevel.ERROR,
                        message=storable_excerpt(
                            f"supervision failed: {message}", MAX_EVENT_MESSAGE_LENGTH
                        ),
                    )
                )
            return
        if self._housekeeping_error is not None:
            log.info("housekeeping.recovered")
            self._housekeeping_error = None

    # ---- reporter ---------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        await self._first_sync.wait()
        while True:
            await self.report_once()
            self._sync_now.fire()
            await self._report_now.wait(self.intervals.report)

    async def report_once(self) -> None:
        """Observe every held node side by side; the next heartbeat carries the result (nothing
        while refused: the control plane would not take it)."""
        if self.refused is not None:
            return
        held = list(self.state.nodes.items())
        states = await asyncio.gather(*(self._observe(nid, h) for nid, h in held))
        fresh = {nid: s for (nid, _), s in zip(held, states, strict=True) if s}
        now = time.monotonic()
        due = self._metrics_sent_at is None or now - self._metrics_sent_at >= self.intervals.metrics
        if due:
            self._metrics_sent_at = now
            self._resources_due = True
        self._observations = {
            nid: s if due else _unless_only_metrics_moved(self._observations.get(nid), s)
            for nid, s in fresh.items()
        }
        # This process's own metrics endpoint shows the numbers as read, at every report.
        self.metrics.observed(len(held), fresh.values())

    async def _observe(self, node_id: UUID, held: HeldNode) -> ObservedNodeState | None:
        """One node's observed state; an observation that fails is reported as its error."""
        if held.assigned.deleted:
            # Only a teardown that fails has something to say about a deleted node.
            error = self._teardown_errors.get(node_id)
            if error is None:
                return None
            return self._state_of(held, [], f"cannot tear down: {error}")
        if node_id not in self._reconciled:
            return None  # the control plane keeps the last observation until then
        try:
            async with asyncio.timeout(self.intervals.observe_timeout):
                processes = await self.backend.observe(held.assigned)
            self._judge_health(held, processes)
            observed = self._state_of(held, processes, None)  # refuses what the wire would
        except Exception as exc:  # one node's probe must not stop the others' reports
            message = (
                f"observing took over {self.intervals.observe_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else describe_error(exc)
            )
            if self._observe_errors.get(node_id) != message:
                self._observe_errors[node_id] = message
                log.error("observe.failed", node=held.name, error=message, exc_info=exc)
                self.queue_event(
                    _node_event(
                        held.assigned,
                        RuntimeEventType.NODE_APPLY_FAILED,
                        f"cannot observe: {message}",
                    )
                )
            return self._state_of(held, [], f"cannot observe: {message}")
        if self._observe_errors.pop(node_id, None) is not None:
            log.info("observe.recovered", node=held.name)
        return observed

    async def _check_edit(self, held: HeldNode) -> None:
        """Refuse (ApplyError) a new revision that the rules of an in-place edit forbid, checked
        against the spec last applied here: the control plane checks it too, but this host's
        data is what another chain or a smaller volume would ruin."""
        new, old = held.assigned.spec, held.applied_spec
        if new is None or old is None or held.applied_revision == held.assigned.revision:
            return
        switched = any(
            role in old.clients and old.clients[role].name != sel.name
            for role, sel in new.clients.items()
        )
        # Only a client switch needs what the adapters declare (detecting it may run binaries).
        capabilities = (
            await asyncio.to_thread(self.backend.capabilities)
            if switched
            else ExecutorCapabilities()
        )
        if problems := edit_problems(old, new, capabilities):
            raise ApplyError(
                "refused change: " + "; ".join(f"{p.path}: {p.message}" for p in problems)
            )

    def _judge_health(self, held: HeldNode, processes: list[ObservedProcess]) -> None:
        """Record whether the applied revision is healthy, or failed its health window (once:
        an event and an apply error until it becomes healthy or a new revision comes)."""
        spec = held.assigned
        if spec.spec is None or held.applied_revision != spec.revision:
            return
        verdict = judge_health(
            revision=held.applied_revision,
            desired=spec.spec.desired_state,
            processes=processes,
            applied_at=held.applied_at,
            window_seconds=spec.spec.rollout.health_window_seconds,
            healthy_revision=held.healthy_revision,
            now=datetime.now(UTC),
        )
        if verdict.healthy and (
            held.healthy_revision != held.applied_revision or held.health_error is not None
        ):
            held.healthy_revision, held.health_error = held.applied_revision, None
            log.info("health.ok", node=held.name, revision=held.applied_revision)
            self._changed()
        elif verdict.error is not None and held.health_error is None:
            held.health_error = verdict.error
            log.error("health.failed", node=held.name, error=verdict.error)
            self.queue_event(_node_event(spec, RuntimeEventType.NODE_APPLY_FAILED, verdict.error))
            self._changed()

    @staticmethod
    def _state_of(
        held: HeldNode, processes: list[ObservedProcess], error: str | None
    ) -> ObservedNodeState:
        """What to report: the revision applied (or the one that failed, with why), and the last
        revision seen healthy."""
        failed = held.apply_error is not None and held.failed_revision is not None
        revision = held.failed_revision if failed and held.failed_revision else None
        if held.apply_error is not None:
            error = held.apply_error
        elif held.health_error is not None and not failed:
            error = held.health_error
        return ObservedNodeState(
            revision=revision or held.applied_revision,
            processes=processes,
            apply_error=storable_excerpt(error, MAX_APPLY_ERROR_LENGTH) if error else None,
            healthy_revision=held.healthy_revision,
        )


def _node_event(spec: AssignedNodeSpec, type_: RuntimeEventType, text: str) -> RuntimeEvent:
    return RuntimeEvent(
        node_id=spec.node_id,
        type=type_,
        level=EventLevel.ERROR,
        message=storable_excerpt(f"{spec.name}: {text}", MAX_EVENT_MESSAGE_LENGTH),
        payload={"revision": spec.revision},
    )
