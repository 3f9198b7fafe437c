"""The runtime's side of changing a node: a new revision's health window, the last healthy
revision it reports, and the in-place edit rules checked again against what it applied."""

import asyncio
from pathlib import Path

import pytest

from nodeplane.protocol import AssignedNodeSpec, NodeSpec, ProcessStatus
from nodeplane.protocol.runtime_events import RuntimeEventType
from tests.executor.runtime_harness import SPEC, ScriptedBackend, assigned, eventually, running

pytestmark = pytest.mark.anyio


def revision(n: int, **changes: object) -> AssignedNodeSpec:
    spec = NodeSpec.model_validate(
        {**SPEC.to_wire(), "rollout": {"healthWindowSeconds": 1}, **changes}
    )
    return assigned("n", n).model_copy(update={"spec": spec})


async def test_a_revision_that_does_not_become_healthy_is_an_apply_error_once(
    tmp_path: Path,
) -> None:
    backend = ScriptedBackend()
    async with running(tmp_path, backend) as h:
        node_id = assigned("n").node_id
        h.push(revision(1))
        first = await eventually(
            lambda: (o := h.plane.observed(node_id)) and o.healthy_revision == 1 and o
        )
        assert first.apply_error is None

        backend.statuses["n"] = (ProcessStatus.ERROR, "litecoind exited with code 1: bad flag")
        h.push(revision(2, clients={"node": {"name": "litecoind", "version": "0.21.3"}}))
        failed = await eventually(
            lambda: (o := h.plane.observed(node_id)) and o.revision == 2 and o.apply_error and o,
            within=5,
        )
        assert failed.apply_error == (
            "revision 2 did not reach running or syncing within 1 s "
            "(node error: litecoind exited with code 1: bad flag)"
        )
        assert failed.healthy_revision == 1  # where an auto-rollback goes back to
        await asyncio.sleep(0.5)  # many reports later: one event
        applies = [e for e in h.plane.events if e.type is RuntimeEventType.NODE_APPLY_FAILED]
        assert len(applies) == 1 and "did not reach running" in applies[0].message

        # Healthy at last: the error is gone and revision 2 is the last healthy one.
        backend.statuses.pop("n")
        healed = await eventually(
            lambda: (o := h.plane.observed(node_id)) and o.healthy_revision == 2 and o
        )
        assert healed.apply_error is None
        assert h.runtime.state.nodes[node_id].healthy_revision == 2


async def test_an_edit_the_rules_forbid_is_refused_by_the_executor_too(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    async with running(tmp_path, backend) as h:
        node_id = assigned("n").node_id
        h.push(revision(1))
        await eventually(lambda: ("n", 1) in backend.applied)
        h.push(revision(2, network="testnet", storage={"size": "1Gi"}))
        refused = await eventually(
            lambda: (o := h.plane.observed(node_id)) and o.revision == 2 and o.apply_error and o
        )
        assert refused.apply_error.startswith("refused change: network: ")
        assert "storage.size: storage cannot shrink (100Gi → 1Gi)" in refused.apply_error
        assert ("n", 2) not in backend.applied
        # A revision within the rules applies.
        h.push(revision(3, resources={"cpuLimit": "2"}))
        await eventually(lambda: ("n", 3) in backend.applied)
