"""A node's metric values go to the control plane on their own cadence (Intervals.metrics);
anything else observed goes with the next heartbeat. Between times the heartbeat repeats the
observation it sent, which the control plane answers without a write (issue 8)."""

import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeplane.protocol import AssignedNodeSpec, HostResources, ObservedProcess, ProcessStatus
from nodeplane.protocol.observed import METRIC_FIELDS, ObservedNodeState, differs_beyond_metrics
from tests.executor.runtime_harness import FAST, ScriptedBackend, assigned, eventually, running

pytestmark = pytest.mark.anyio


class Climbing(ScriptedBackend):
    """A running node whose height and CPU time grow at every observation, as a live one's do."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = itertools.count(1)

    async def observe(self, node: AssignedNodeSpec) -> list[ObservedProcess]:
        read = next(self.reads)
        status, message = self.statuses.get(node.name, (ProcessStatus.RUNNING, None))
        return [
            ObservedProcess(
                role="node", status=status, message=message, height=read, cpu_seconds=read / 10
            )
        ]


def _heights(plane_syncs: list, node_id: object) -> list[int | None]:
    return [
        obs.observed.processes[0].height
        for request in plane_syncs
        for obs in request.nodes
        if obs.node_id == node_id and obs.observed.processes
    ]


async def test_metric_values_alone_wait_for_the_metrics_interval(tmp_path) -> None:
    backend = Climbing()
    node = assigned("n")
    async with running(tmp_path, backend, replace(FAST, metrics=3600.0)) as h:
        h.push(node)
        await eventually(lambda: h.plane.observed(node.node_id))
        first = h.plane.observed(node.node_id)
        reads_then = next(backend.reads)
        await eventually(lambda: next(backend.reads) > reads_then + 20)
        await eventually(lambda: len(h.plane.syncs) > 20)
        # Observed many times since, growing each time: every heartbeat repeated the first.
        assert set(_heights(h.plane.syncs, node.node_id)) == {first.processes[0].height}
        assert h.plane.observed(node.node_id) == first

        # A status change is not held back by the metrics interval, and brings fresh numbers.
        backend.statuses["n"] = (ProcessStatus.SYNCING, "catching up")
        changed = await eventually(
            lambda: (o := h.plane.observed(node.node_id)).processes[0].status == "syncing" and o
        )
        assert changed.processes[0].message == "catching up"
        assert changed.processes[0].height > first.processes[0].height


async def test_metric_values_are_sent_again_at_each_metrics_interval(tmp_path) -> None:
    backend = Climbing()
    node = assigned("n")
    async with running(tmp_path, backend, replace(FAST, metrics=0.2)) as h:
        h.push(node)
        await eventually(lambda: h.plane.observed(node.node_id))
        await eventually(lambda: len(set(_heights(h.plane.syncs, node.node_id))) >= 4, within=5)
        heights = _heights(h.plane.syncs, node.node_id)
        # Several heartbeats per value (report and heartbeat every 20 ms, metrics every 200 ms).
        assert len(heights) > 2 * len(set(heights))
        assert heights == sorted(heights)


class FillingDisk(ScriptedBackend):
    """A host whose free disk shrinks between any two readings, as a host running a syncing
    chain's does."""

    def __init__(self) -> None:
        super().__init__()
        self.free = itertools.count(10**12, -4096)

    def resources(self) -> HostResources:
        return HostResources(
            cpu_cores=2.0, disk_total_bytes=2 * 10**12, disk_available_bytes=next(self.free)
        )


def _free(plane_syncs: list) -> list[int | None]:
    return [request.resources.disk_available_bytes for request in plane_syncs]


async def test_the_hosts_resources_wait_for_the_metrics_interval(tmp_path) -> None:
    """Free disk moves all the time on a busy host: sent at each heartbeat, it made every
    heartbeat a change the control plane had to write."""
    backend = FillingDisk()
    async with running(tmp_path, backend, replace(FAST, metrics=3600.0)) as h:
        await eventually(lambda: len(h.plane.syncs) > 20)
        free = _free(h.plane.syncs)
        # Read for the first heartbeat, and with the first metrics (the first report): then
        # never again within the interval, however many heartbeats go.
        assert len(set(free)) <= 2 and free[0] is not None
        assert len(set(free[-15:])) == 1
    async with running(tmp_path, FillingDisk(), replace(FAST, metrics=0.2)) as h:
        await eventually(lambda: len(set(_free(h.plane.syncs))) >= 3, within=5)
        free = _free(h.plane.syncs)
        assert len(free) > 2 * len(set(free))
        assert free == sorted(free, reverse=True)


_PROCESS_VALUES = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["running", "syncing", "stopped"]),
        "message": st.none() | st.sampled_from(["a", "b"]),
        "pid": st.none() | st.integers(1, 3),
        "client_version": st.none() | st.sampled_from(["1.0.0", "1.1.0"]),
        **{name: st.none() | st.integers(0, 2) for name in METRIC_FIELDS - {"sync_progress"}},
        "sync_progress": st.none() | st.sampled_from([0.0, 0.5, 1.0]),
    }
)
_STATES = st.fixed_dictionaries(
    {
        "revision": st.integers(1, 2),
        "apply_error": st.none() | st.just("broken"),
        "healthy_revision": st.none() | st.just(1),
        "processes": st.lists(_PROCESS_VALUES, max_size=2),
    }
)


def _masked(state: dict) -> dict:
    """The observation with each metric's value replaced by whether it is there."""
    return {
        **state,
        "processes": [
            {k: (v is not None) if k in METRIC_FIELDS else v for k, v in p.items()}
            for p in state["processes"]
        ],
    }


@given(_STATES, _STATES)
def test_only_metric_values_may_differ_for_an_observation_to_be_held_back(
    old: dict, new: dict
) -> None:
    for p in (*old["processes"], *new["processes"]):
        p.setdefault("role", "node")
    a, b = ObservedNodeState.model_validate(old), ObservedNodeState.model_validate(new)
    assert differs_beyond_metrics(a, b) == (_masked(a.model_dump()) != _masked(b.model_dump()))
