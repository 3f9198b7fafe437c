"""`nodeplane nodes edit|rollback` as a user runs them, with `--wait` driven by a protocol-level
executor, and the pure mapping of edit flags to updateNode fields."""

import json
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import typer

from nodeplane.cli.edit import edit_changes
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.cli.conftest import Cli, deploy, next_spec
from tests.support.fleet import FakeExecutor, Org

S = ProcessStatus
Background = Callable[[Callable[[], Any]], Future[Any]]

CURRENT = {
    "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
    "overrides": {"args": {"node": ["-txindex=1"], "other": ["-x"]}, "files": {}},
    "resources": {"cpuLimit": "2", "memoryLimit": "8Gi"},
}


def test_edit_flags_become_update_fields() -> None:
    changes = edit_changes(
        CURRENT,
        clients=["node=litecoind:0.21.3"],
        override_args=["node=-dbcache=300", "node=-maxconnections=8"],
        resources=["cpuLimit=4,memory-limit=", "cpuRequest=1"],
        storage_size="200Gi",
        spec_file=None,
        health_window=60,
        auto_rollback=True,
    )
    assert changes == {
        "rollout": {"healthWindowSeconds": 60, "autoRollback": True},
        "clients": {"node": {"name": "litecoind", "version": "0.21.3"}},
        "overrides": {
            "args": {"node": ["-dbcache=300", "-maxconnections=8"], "other": ["-x"]},
            "files": {},
        },
        "resources": {"cpuLimit": "4", "memoryLimit": None, "cpuRequest": "1"},
        "storage": {"size": "200Gi"},
    }
    assert (
        edit_changes(
            CURRENT, clients=[], override_args=[], resources=[], storage_size=None, spec_file=None
        )
        == {}
    )
    with pytest.raises(typer.BadParameter):
        edit_changes(
            CURRENT,
            clients=[],
            override_args=[],
            resources=["disk=1"],
            storage_size=None,
            spec_file=None,
        )


def running(org: Org, executor: FakeExecutor, name: str = "ltc-1") -> dict[str, Any]:
    node = deploy(org, executor, name)
    executor.observe(node["id"], 1, S.RUNNING)
    return node


def applies(executor: FakeExecutor, node_id: str, after: int) -> Callable[[], None]:
    def run() -> None:
        spec = next_spec(executor, node_id, after)
        executor.observe(node_id, spec.revision, S.RUNNING)

    return run


def test_edit_a_version_with_wait_then_roll_back(
    cli: Cli, org: Org, executor: FakeExecutor, background: Background
) -> None:
    node = running(org, executor)
    background(applies(executor, node["id"], 1))
    result = cli(
        "nodes",
        "edit",
        "ltc-1",
        "--client",
        "node=litecoind:0.21.3",
        "--override-arg",
        "node=-txindex=1",
        "--expected-revision",
        "1",
        "--wait",
        "--timeout",
        "30",
    )
    assert result.code == 0, result.stderr
    assert "edited ltc-1: revision 2, 2 changes" in result.stdout
    assert "clients.node.version: 0.21.4 → 0.21.3" in result.stdout
    assert "ltc-1 is running at revision 2" in result.stdout

    background(applies(executor, node["id"], 2))
    result = cli("nodes", "rollback", "ltc-1", "--to", "1", "--wait", "-o", "json")
    assert result.code == 0, result.stderr
    body = result.json()
    assert (body["revision"], body["observedRevision"], body["phase"]) == (3, 3, "running")
    assert body["spec"]["clients"]["node"]["version"] == "0.21.4"
    assert body["spec"]["overrides"]["args"] == {}

    history = cli("nodes", "revisions", "ltc-1", "-o", "json").json()
    assert [h["cause"] for h in history] == ["created", "configuration updated", "rollback"]


def test_edit_refusals_are_typed(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    running(org, executor)
    result = cli("nodes", "edit", "ltc-1", "--storage-size", "1Gi")
    assert result.code != 0
    assert "storage cannot shrink (100Gi → 1Gi)" in result.said, result.said
    result = cli("nodes", "edit", "ltc-1", "--resources", "cpuLimit=2", "--expected-revision", "7")
    assert result.code != 0 and "revision 1, not 7" in result.said
    result = cli("nodes", "rollback", "ltc-1", "--to", "5")
    assert result.code != 0 and "no revision 5" in result.said
    result = cli("nodes", "edit", "ltc-1")
    assert result.code != 0 and "nothing to change" in result.said


def test_edit_from_a_spec_file(cli: Cli, org: Org, executor: FakeExecutor, tmp_path: Path) -> None:
    running(org, executor)
    spec = cli("nodes", "get", "ltc-1", "-o", "json").json()["spec"]
    spec["clients"]["node"]["version"] = "0.21.3"
    spec["resources"]["cpuLimit"] = "3"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = cli("nodes", "edit", "ltc-1", "--spec-file", str(path), "-o", "json")
    assert result.code == 0, result.stderr
    body = result.json()
    assert body["revision"] == 2
    assert body["spec"]["clients"]["node"]["version"] == "0.21.3"
    assert body["spec"]["resources"]["cpuLimit"] == "3"


def test_wait_fails_when_the_edit_was_rolled_back_by_itself(
    cli: Cli, org: Org, executor: FakeExecutor, background: Background
) -> None:
    node = deploy(org, executor, "ltc-1")
    org.owner(
        "mutation($i: UpdateNodeInput!) { updateNode(input: $i) { revision } }",
        {"i": {"nodeId": node["id"], "rollout": {"autoRollback": True}}},
    )
    executor.sync({node["id"]: ObservedNodeState(revision=2, processes=[ok()], healthy_revision=2)})

    def fail_then_recover() -> None:
        spec = next_spec(executor, node["id"], 2)
        reason = f"revision {spec.revision} did not reach running or syncing within 600 s"
        failed = ObservedProcess(role="node", status=S.ERROR, message="exited with code 1")
        executor.sync(
            {
                node["id"]: ObservedNodeState(
                    revision=spec.revision,
                    processes=[failed],
                    apply_error=reason,
                    healthy_revision=2,
                )
            }
        )
        back = next_spec(executor, node["id"], spec.revision)
        executor.sync(
            {
                node["id"]: ObservedNodeState(
                    revision=back.revision, processes=[ok()], healthy_revision=2
                )
            }
        )

    background(fail_then_recover)
    result = cli(
        "nodes", "edit", "ltc-1", "--client", "node=litecoind:0.21.3", "--wait", "--timeout", "30"
    )
    assert result.code == 4, (result.stdout, result.stderr)
    assert "revision 3 failed and was rolled back by itself (revision 4)" in result.said
    assert "did not reach running or syncing within 600 s" in result.said


def ok() -> ObservedProcess:
    return ObservedProcess(role="node", status=S.RUNNING)
