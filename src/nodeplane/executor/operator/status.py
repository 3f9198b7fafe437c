"""What a BlockchainNode's `.status` says, from its StatefulSet and Pod: pure functions, no I/O.

The controller reads the node's StatefulSet and Pod (written by the controller-manager and the
kubelet) and maps them here into one entry per container (the node's roles, with the raw process
status of DESIGN §6) and the resource's phase (DESIGN §5). The backend then reports the entries
to the control plane as the node's processes, so the derived phase there explains a failure with
the container's own reason (CrashLoopBackOff, ImagePullBackOff, OOMKilled, ...).

Objects are plain dicts as the API server sends them (`obj.to_dict()`), so tables of tests need
no client.

Heights and sync state: a pod's RPC listens on loopback only (as the adapters render it), so the
pod's probe sidecar asks each role and the controller reads its report (probe.py); `with_probes`
lets it decide the status of a running container (running, syncing or still starting), as the
agent's probe decides for a running unit, and adds height, network height, peers and progress.
When the kubelet says the sidecar itself does not run (an image that cannot be pulled, a crash
loop), `sidecar_down` says why, and that is the message of the roles it cannot report on.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from nodeplane.chains.base import ProbeResult
from nodeplane.executor.operator.crd import Phase
from nodeplane.protocol.enums import DesiredState, ProcessStatus
from nodeplane.protocol.observed import MAX_APPLY_ERROR_LENGTH, MAX_MESSAGE_LENGTH
from nodeplane.protocol.text import storable_excerpt

# Waiting reasons that mean the container will not start without a change (an image that
# cannot be pulled, a crash loop, a config the runtime refuses), not that it is on its way.
ERROR_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreStartHookError",
        "PostStartHookError",
    }
)
MAX_REASON_LENGTH = 1024
CONDITION_RENDERED = "Rendered"
CONDITION_READY = "Ready"


@dataclass(frozen=True)
class ContainerState:
    """One role's container as `.status.containers` holds it."""

    role: str
    status: ProcessStatus
    ready: bool = False
    restart_count: int = 0
    reason: str | None = None
    message: str | None = None
    # From the probe sidecar, when it answered for this role.
    height: int | None = None
    network_height: int | None = None
    peers: int | None = None
    sync_progress: float | None = None

    def to_status(self) -> dict[str, Any]:
        """The entry of `.status.containers`."""
        entry: dict[str, Any] = {
            "role": self.role,
            "container": self.role,
            "status": self.status.value,
            "ready": self.ready,
            "restartCount": self.restart_count,
        }
        if self.reason:
            entry["reason"] = self.reason[:MAX_REASON_LENGTH]
        if self.message:
            entry["message"] = storable_excerpt(self.message, MAX_MESSAGE_LENGTH)
        metrics = {
            "height": self.height,
            "networkHeight": self.network_height,
            "peers": self.peers,
            "syncProgress": self.sync_progress,
        }
        entry.update({k: v for k, v in metrics.items() if v is not None})
        return entry


def container_up(container: ContainerState) -> bool:
    """Whether the kubelet says the container runs (ready or not): then the probe decides."""
    return container.status == ProcessStatus.RUNNING or (
        container.status == ProcessStatus.STARTING and container.reason == "NotReady"
    )


def with_probes(
    containers: list[ContainerState],
    report: Mapping[str, ProbeResult] | None,
    unreachable: str | None = None,
) -> list[ContainerState]:
    """The containers with what the probe sidecar saw of each running one.

    A running container's status is the probe's (running, syncing, or starting while its RPC
    does not answer yet), with its height, network height, peers and sync progress: the agent's
    rule for a running unit. A container the kubelet reports otherwise (starting, stopping, in
    error) keeps that status. Without a report (the sidecar did not answer: `unreachable` says
    why) a running container keeps the kubelet's status, with that message.
    """
    out = []
    for container in containers:
        if not container_up(container):
            out.append(container)
            continue
        seen = (report or {}).get(container.role)
        if seen is None:
            if unreachable is not None:
                container = replace(container, message=f"probe sidecar: {unreachable}")
            out.append(container)
            continue
        out.append(
            replace(
                container,
                status=seen.status,
                reason=container.reason if seen.status == ProcessStatus.STARTING else None,
                message=seen.message,
                height=seen.height,
                network_height=seen.network_height,
                peers=seen.peers,
                sync_progress=seen.sync_progress,
            )
        )
    return out


def sidecar_down(pod: dict[str, Any] | None, container: str) -> str | None:
    """Why the pod's sidecar container `container` (the probe sidecar) cannot answer, as the
    kubelet says: its waiting reason and message (with a crash loop's last exit) or how it
    terminated, e.g. `ImagePullBackOff: Back-off pulling image "..."`. None when it runs, or
    when the kubelet has said nothing of it yet (then only asking it tells).

    The sidecar is no role: its trouble goes into the message of the roles it reports on
    (through `with_probes`), never into their status, since the clients may run fine and only
    heights and readiness are lost.
    """
    if pod is None:
        return None
    status = _statuses(pod, "containerStatuses").get(container)
    if status is None:
        return None
    state = _running_container(container, status)
    if container_up(state) or state.reason == "Unknown":
        return None
    return state.message or state.reason


def _statuses(pod: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in (pod.get("status") or {}).get(key) or []}


def _failed_init(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of an init container that keeps the pod from starting, if any."""
    for name, status in _statuses(pod, "initContainerStatuses").items():
        state = status.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") in ERROR_WAITING_REASONS:
            reason = waiting["reason"]
            return reason, _join(f"init container {name}: {reason}", waiting.get("message"))
        terminated = state.get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            reason = terminated.get("reason") or "Error"
            text = f"init container {name}: {reason} (exit code {terminated.get('exitCode')})"
            return reason, _join(text, terminated.get("message"))
    return None


def _join(text: str, detail: str | None) -> str:
    return f"{text}: {detail}" if detail else text


def _unscheduled(pod: dict[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _join(condition.get("reason") or "Unschedulable", condition.get("message"))
    return None


def _all_failed(roles: list[str], reason: str, message: str) -> list[ContainerState]:
    return [ContainerState(r, ProcessStatus.ERROR, reason=reason, message=message) for r in roles]


def _running_container(role: str, status: dict[str, Any] | None) -> ContainerState:
    """A container of a pod that should run."""
    if status is None:
        return ContainerState(role, ProcessStatus.STARTING, reason="ContainerCreating")
    restarts = int(status.get("restartCount") or 0)
    ready = bool(status.get("ready"))
    state = status.get("state") or {}
    if waiting := state.get("waiting"):
        reason = waiting.get("reason") or "Waiting"
        detail = _join(reason, waiting.get("message"))
        if reason in ERROR_WAITING_REASONS:
            last = (status.get("lastState") or {}).get("terminated")
            if last:
                code = last.get("exitCode")
                detail += f" (last exit: {last.get('reason') or 'Error'}, code {code})"
            return ContainerState(role, ProcessStatus.ERROR, ready, restarts, reason, detail)
        return ContainerState(role, ProcessStatus.STARTING, ready, restarts, reason, detail)
    if terminated := state.get("terminated"):
        code = terminated.get("exitCode", 0)
        reason = terminated.get("reason") or ("Completed" if code == 0 else "Error")
        detail = _join(f"{reason} (exit code {code})", terminated.get("message"))
        status_ = ProcessStatus.STOPPED if code == 0 else ProcessStatus.ERROR
        return ContainerState(role, status_, ready, restarts, reason, detail)
    if state.get("running"):
        if ready:
            return ContainerState(role, ProcessStatus.RUNNING, True, restarts)
        return ContainerState(role, ProcessStatus.STARTING, False, restarts, "NotReady")
    return ContainerState(role, ProcessStatus.STARTING, ready, restarts, "Unknown")


def container_states(
    roles: list[str], desired: DesiredState, pod: dict[str, Any] | None
) -> list[ContainerState]:
    """Each role's container, from the node's pod (None when there is none)."""
    if pod is None:
        status = (
            ProcessStatus.STOPPED if desired == DesiredState.STOPPED else ProcessStatus.STARTING
        )
        reason = None if desired == DesiredState.STOPPED else "NoPod"
        return [ContainerState(role, status, reason=reason) for role in roles]
    statuses = _statuses(pod, "containerStatuses")
    if desired == DesiredState.STOPPED or (pod.get("metadata") or {}).get("deletionTimestamp"):
        # A pod on its way out (scaled to 0, or replaced by a rollout): running containers stop.
        out = []
        for role in roles:
            state = (statuses.get(role) or {}).get("state") or {}
            running = "running" in state or not state
            out.append(
                ContainerState(
                    role,
                    ProcessStatus.STOPPING if running else ProcessStatus.STOPPED,
                    restart_count=int((statuses.get(role) or {}).get("restartCount") or 0),
                )
            )
        return out
    if (pod.get("status") or {}).get("phase") == "Failed":
        reason = (pod.get("status") or {}).get("reason") or "Failed"
        message = _join(f"pod failed: {reason}", (pod.get("status") or {}).get("message"))
        return [
            ContainerState(r, ProcessStatus.ERROR, reason=reason, message=message) for r in roles
        ]
    if failed := _failed_init(pod):
        reason, message = failed
        return [
            ContainerState(r, ProcessStatus.ERROR, reason=reason, message=message) for r in roles
        ]
    if (unscheduled := _unscheduled(pod)) is not None:
        return [
            ContainerState(r, ProcessStatus.STARTING, reason="Unschedulable", message=unscheduled)
            for r in roles
        ]
    return [_running_container(role, statuses.get(role)) for role in roles]


def _rollout_pending(stateful_set: dict[str, Any] | None) -> bool:
    """Whether the StatefulSet controller has not yet caught up with the StatefulSet's spec."""
    if stateful_set is None:
        return True
    status = stateful_set.get("status") or {}
    generation = (stateful_set.get("metadata") or {}).get("generation") or 0
    return int(status.get("observedGeneration") or 0) < int(generation)


def node_phase(
    desired: DesiredState,
    containers: list[ContainerState],
    stateful_set: dict[str, Any] | None,
    pod: dict[str, Any] | None,
    render_error: str | None = None,
) -> tuple[str, str | None]:
    """The BlockchainNode's phase and a message saying why, when it is not plain."""
    if render_error is not None:
        return Phase.ERROR, render_error
    if desired == DesiredState.STOPPED:
        if pod is not None or any(c.status == ProcessStatus.STOPPING for c in containers):
            return Phase.STOPPING, "waiting for the pod to stop"
        return Phase.STOPPED, None
    if failing := [c for c in containers if c.status == ProcessStatus.ERROR]:
        return Phase.ERROR, "; ".join(f"{c.role}: {c.message or c.reason}" for c in failing)
    if _rollout_pending(stateful_set):
        return Phase.CONFIGURING, "waiting for the StatefulSet controller"
    if pod is None:
        return Phase.PENDING, "waiting for the pod to be created"
    if all(c.status == ProcessStatus.RUNNING for c in containers):
        return Phase.RUNNING, None
    if any(c.status == ProcessStatus.SYNCING for c in containers) and all(
        c.status in (ProcessStatus.RUNNING, ProcessStatus.SYNCING) for c in containers
    ):
        return Phase.SYNCING, None
    waiting = [c for c in containers if c.status != ProcessStatus.RUNNING]
    return Phase.PENDING, "; ".join(f"{c.role}: {c.message or c.reason}" for c in waiting)


def _condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str | None,
    generation: int,
    previous: dict[str, dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(type_)
    # lastTransitionTime moves only when the status flips (metav1.Condition's rule).
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else now.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
    }
    if message:
        condition["message"] = message[:32768]
    return condition


def status_body(
    *,
    generation: int,
    revision: int | None,
    phase: str,
    message: str | None,
    containers: list[ContainerState],
    render_error: str | None,
    render_reason: str = "RenderFailed",
    previous: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole `.status` the controller writes (server-side apply of the status subresource)."""
    now = now or datetime.now(UTC)
    before = {c["type"]: c for c in (previous or {}).get("conditions") or [] if "type" in c}
    ready_reason = phase if phase != Phase.ERROR else "ContainerError"
    if render_error is not None:
        ready_reason = render_reason
    conditions = [
        _condition(
            CONDITION_RENDERED,
            render_error is None,
            "Applied" if render_error is None else render_reason,
            render_error,
            generation,
            before,
            now,
        ),
        _condition(
            CONDITION_READY, phase == Phase.RUNNING, ready_reason, message, generation, before, now
        ),
    ]
    body: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "conditions": conditions,
        "containers": [c.to_status() for c in containers],
    }
    if revision is not None:
        body["revision"] = revision
    # The printer column: the first role's height that is known (execution before consensus).
    height = next((c.height for c in containers if c.height is not None), None)
    if height is not None:
        body["height"] = height
    if message:
        body["message"] = storable_excerpt(message, MAX_APPLY_ERROR_LENGTH)
    return body
