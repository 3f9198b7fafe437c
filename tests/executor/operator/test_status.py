"""Pod and container states -> per-container process status and BlockchainNode phase (pure)."""

from datetime import UTC, datetime
from typing import Any

import pytest

from nodeplane.executor.operator.backend import observed_processes, rendered_generation
from nodeplane.executor.operator.crd import Phase
from nodeplane.executor.operator.render import PROBE_CONTAINER
from nodeplane.executor.operator.status import (
    ContainerState,
    container_states,
    node_phase,
    sidecar_down,
    status_body,
    with_probes,
)
from nodeplane.protocol import DesiredState, ProcessStatus

RUN = DesiredState.RUNNING
STOP = DesiredState.STOPPED
STS = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}


def pod(
    *statuses: dict[str, Any], init: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running", "containerStatuses": list(statuses)}
    if init is not None:
        status["initContainerStatuses"] = init
    status.update(extra.pop("status", {}))
    return {"metadata": extra.pop("metadata", {"name": "n-0"}), "status": status}


def c(
    name: str, state: dict[str, Any], ready: bool = False, restarts: int = 0, **more: Any
) -> dict[str, Any]:
    return {"name": name, "state": state, "ready": ready, "restartCount": restarts, **more}


RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


@pytest.mark.parametrize(
    ("desired", "the_pod", "expected"),
    [
        (RUN, None, [("node", ProcessStatus.STARTING, "NoPod")]),
        (STOP, None, [("node", ProcessStatus.STOPPED, None)]),
        (RUN, pod(), [("node", ProcessStatus.STARTING, "ContainerCreating")]),
        (RUN, pod(c("node", RUNNING, ready=True)), [("node", ProcessStatus.RUNNING, None)]),
        (RUN, pod(c("node", RUNNING)), [("node", ProcessStatus.STARTING, "NotReady")]),
        (
            RUN,
            pod(c("node", {"waiting": {"reason": "ContainerCreating"}})),
            [("node", ProcessStatus.STARTING, "ContainerCreating")],
        ),
        (
            RUN,
            pod(c("node", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}})),
            [("node", ProcessStatus.ERROR, "CrashLoopBackOff")],
        ),
        (
            RUN,
            pod(c("node", {"waiting": {"reason": "ImagePullBackOff"}})),
            [("node", ProcessStatus.ERROR, "ImagePullBackOff")],
        ),
        (
            RUN,
            pod(c("node", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})),
            [("node", ProcessStatus.ERROR, "OOMKilled")],
        ),
        (
            RUN,
            pod(c("node", {"terminated": {"exitCode": 0}})),
            [("node", ProcessStatus.STOPPED, "Completed")],
        ),
        (
            RUN,
            pod(init=[c("init-jwt", {"waiting": {"reason": "CrashLoopBackOff"}})]),
            [("node", ProcessStatus.ERROR, "CrashLoopBackOff")],
        ),
        (
            RUN,
            pod(status={"phase": "Failed", "reason": "Evicted"}),
            [("node", ProcessStatus.ERROR, "Evicted")],
        ),
        (
            RUN,
            pod(
                status={
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
                    ],
                }
            ),
            [("node", ProcessStatus.STARTING, "Unschedulable")],
        ),
        (STOP, pod(c("node", RUNNING, ready=True)), [("node", ProcessStatus.STOPPING, None)]),
        (
            RUN,
            pod(c("node", RUNNING, ready=True), metadata={"deletionTimestamp": "x"}),
            [("node", ProcessStatus.STOPPING, None)],
        ),
    ],
)
def test_container_states(
    desired: DesiredState,
    the_pod: dict[str, Any] | None,
    expected: list[tuple[str, ProcessStatus, str | None]],
) -> None:
    got = [(s.role, s.status, s.reason) for s in container_states(["node"], desired, the_pod)]
    assert got == expected


def test_crash_loop_message_names_the_last_exit() -> None:
    (state,) = container_states(
        ["node"],
        RUN,
        pod(
            c(
                "node",
                {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                restarts=7,
                lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
            )
        ),
    )
    assert state.restart_count == 7
    assert state.message == "CrashLoopBackOff: back-off 5m0s (last exit: Error, code 1)"


PULL_BACKOFF = {
    "waiting": {
        "reason": "ImagePullBackOff",
        "message": 'Back-off pulling image "mirror.local/nodeplane:0.1.0"',
    }
}


@pytest.mark.parametrize(
    ("sidecar", "expected"),
    [
        (None, None),  # the kubelet said nothing of it yet: only asking it tells
        (c(PROBE_CONTAINER, RUNNING, ready=True), None),
        (c(PROBE_CONTAINER, {}), None),
        (
            c(PROBE_CONTAINER, PULL_BACKOFF),
            'ImagePullBackOff: Back-off pulling image "mirror.local/nodeplane:0.1.0"',
        ),
        (
            c(PROBE_CONTAINER, {"waiting": {"reason": "ErrImagePull", "message": "not found"}}),
            "ErrImagePull: not found",
        ),
        (
            c(
                PROBE_CONTAINER,
                {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                restarts=4,
                lastState={"terminated": {"exitCode": 2, "reason": "Error"}},
            ),
            "CrashLoopBackOff: back-off 40s (last exit: Error, code 2)",
        ),
        (c(PROBE_CONTAINER, {"waiting": {"reason": "ContainerCreating"}}), "ContainerCreating"),
        (
            c(PROBE_CONTAINER, {"terminated": {"exitCode": 1, "reason": "Error"}}),
            "Error (exit code 1)",
        ),
    ],
)
def test_sidecar_down(sidecar: dict[str, Any] | None, expected: str | None) -> None:
    statuses = [c("node", RUNNING, ready=True)] + ([sidecar] if sidecar else [])
    assert sidecar_down(pod(*statuses), PROBE_CONTAINER) == expected


def test_sidecar_down_without_a_pod_or_for_another_container() -> None:
    assert sidecar_down(None, PROBE_CONTAINER) is None
    # Only the named container counts: a role in trouble is the roles' own business.
    failing_role = pod(c("node", PULL_BACKOFF), c(PROBE_CONTAINER, RUNNING, ready=True))
    assert sidecar_down(failing_role, PROBE_CONTAINER) is None


@pytest.mark.parametrize("ready", [False, True])
def test_a_sidecar_that_cannot_run_is_the_node_message_not_an_error(ready: bool) -> None:
    """The clients run (not ready, as readiness asks the sidecar, or not yet marked so): they
    stay starting or running with the sidecar's own reason as their message, never `error`."""
    roles = ["execution", "consensus"]
    the_pod = pod(
        c("execution", RUNNING, ready=ready),
        c("consensus", RUNNING, ready=ready),
        c(PROBE_CONTAINER, PULL_BACKOFF),
    )
    containers = with_probes(
        container_states(roles, RUN, the_pod), None, sidecar_down(the_pod, PROBE_CONTAINER)
    )
    why = 'probe sidecar: ImagePullBackOff: Back-off pulling image "mirror.local/nodeplane:0.1.0"'
    expected = ProcessStatus.RUNNING if ready else ProcessStatus.STARTING
    assert [(x.role, x.status, x.message) for x in containers] == [
        ("execution", expected, why),
        ("consensus", expected, why),
    ]
    phase, message = node_phase(RUN, containers, STS, the_pod)
    if ready:
        assert (phase, message) == (Phase.RUNNING, None)
    else:
        assert phase == Phase.PENDING
        assert message == f"execution: {why}; consensus: {why}"


def states(*pairs: tuple[str, ProcessStatus]) -> list[ContainerState]:
    return [ContainerState(role, status, reason="R") for role, status in pairs]


@pytest.mark.parametrize(
    ("desired", "containers", "sts", "has_pod", "render_error", "phase"),
    [
        (RUN, [], STS, True, "bad", Phase.ERROR),
        (STOP, states(("node", ProcessStatus.STOPPED)), STS, False, None, Phase.STOPPED),
        (STOP, states(("node", ProcessStatus.STOPPING)), STS, True, None, Phase.STOPPING),
        (RUN, states(("node", ProcessStatus.ERROR)), STS, True, None, Phase.ERROR),
        (RUN, states(("node", ProcessStatus.STARTING)), None, False, None, Phase.CONFIGURING),
        (
            RUN,
            states(("node", ProcessStatus.STARTING)),
            {"metadata": {"generation": 3}, "status": {"observedGeneration": 2}},
            True,
            None,
            Phase.CONFIGURING,
        ),
        (RUN, states(("node", ProcessStatus.STARTING)), STS, False, None, Phase.PENDING),
        (RUN, states(("node", ProcessStatus.STARTING)), STS, True, None, Phase.PENDING),
        (
            RUN,
            states(("execution", ProcessStatus.RUNNING), ("consensus", ProcessStatus.RUNNING)),
            STS,
            True,
            None,
            Phase.RUNNING,
        ),
        (
            RUN,
            states(("execution", ProcessStatus.SYNCING), ("consensus", ProcessStatus.RUNNING)),
            STS,
            True,
            None,
            Phase.SYNCING,
        ),
    ],
)
def test_node_phase(
    desired: DesiredState,
    containers: list[ContainerState],
    sts: dict[str, Any] | None,
    has_pod: bool,
    render_error: str | None,
    phase: str,
) -> None:
    got, _ = node_phase(desired, containers, sts, pod() if has_pod else None, render_error)
    assert got == phase


def test_error_message_names_each_failing_role() -> None:
    containers = [
        ContainerState("execution", ProcessStatus.ERROR, reason="ImagePullBackOff", message="pull"),
        ContainerState("consensus", ProcessStatus.RUNNING, ready=True),
    ]
    assert node_phase(RUN, containers, STS, pod(), None) == (Phase.ERROR, "execution: pull")


def test_condition_keeps_its_transition_time_while_unchanged() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 1, 2, tzinfo=UTC)
    running = [ContainerState("node", ProcessStatus.RUNNING, ready=True)]
    first = status_body(
        generation=1,
        revision=1,
        phase=Phase.RUNNING,
        message=None,
        containers=running,
        render_error=None,
        now=t0,
    )
    again = status_body(
        generation=1,
        revision=1,
        phase=Phase.RUNNING,
        message=None,
        containers=running,
        render_error=None,
        previous=first,
        now=t1,
    )
    assert again == first  # nothing to write
    failed = status_body(
        generation=1,
        revision=1,
        phase=Phase.ERROR,
        message="x",
        containers=running,
        render_error=None,
        previous=first,
        now=t1,
    )
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["lastTransitionTime"] == "2026-01-02T00:00:00Z"
    rendered = next(c for c in failed["conditions"] if c["type"] == "Rendered")
    assert rendered["lastTransitionTime"] == "2026-01-01T00:00:00Z"


class _Meta:
    generation = 3


class _Obj:
    metadata = _Meta()

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status


def test_backend_reads_render_outcome_and_processes_from_status() -> None:
    assert rendered_generation(_Obj({"observedGeneration": 2})) == (False, None)
    assert rendered_generation(_Obj({"observedGeneration": 3})) == (True, None)
    refused = {
        "observedGeneration": 3,
        "conditions": [{"type": "Rendered", "status": "False", "message": "no image"}],
    }
    assert rendered_generation(_Obj(refused)) == (True, "no image")
    obj = _Obj(
        {
            "containers": [
                {"role": "node", "status": "error", "reason": "CrashLoopBackOff", "message": "m"},
                {"role": "aux", "status": "running", "height": 7},
            ]
        }
    )
    node, aux = observed_processes(obj)
    assert (node.status, node.message) == (ProcessStatus.ERROR, "m")
    assert (aux.status, aux.height, aux.message) == (ProcessStatus.RUNNING, 7, None)
