"""The probe sidecar's plan and report (pure), and how the controller maps a report into status."""

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodeplane.chains.base import ProbeResult, ProcessPlan, RpcEndpoint
from nodeplane.executor.operator.backend import observed_processes
from nodeplane.executor.operator.crd import Phase
from nodeplane.executor.operator.images import OPERATOR_IMAGE
from nodeplane.executor.operator.probe import (
    ProbePlanError,
    all_ready,
    parse_plan,
    plan_json,
    report_entry,
    report_of,
)
from nodeplane.executor.operator.status import (
    ContainerState,
    node_phase,
    status_body,
    with_probes,
)
from nodeplane.protocol import ProcessStatus
from nodeplane.protocol.enums import DesiredState

ROOT = Path(__file__).resolve().parents[3]
STS = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}


def process(role: str, **rpc: Any) -> ProcessPlan:
    return ProcessPlan(
        role=role,
        client="litecoind",
        version="0.21.4",
        argv=("litecoind", "-datadir=/node/data"),
        working_dir=Path("/node/data"),
        rpc=RpcEndpoint(**rpc) if rpc else None,
        network="regtest",
    )


def test_the_plan_round_trips_what_a_probe_reads() -> None:
    processes = [
        process(
            "node",
            url="http://127.0.0.1:19443/",
            cookie_file=Path("/node/data/regtest/.cookie"),
        ),
        process("aux"),
    ]
    plan = parse_plan(plan_json("litecoin", processes))
    assert plan.chain == "litecoin"
    for parsed, original in zip(plan.processes, processes, strict=True):
        # What adapter.probe reads survives; the argv (nothing for the sidecar to run) does not.
        assert (parsed.role, parsed.client, parsed.version, parsed.network, parsed.rpc) == (
            original.role,
            original.client,
            original.version,
            original.network,
            original.rpc,
        )
        assert parsed.argv == ()
    # Stable text: the config hash (and so the pod) changes only when the plan does.
    assert plan_json("litecoin", processes) == plan_json("litecoin", list(processes))


@pytest.mark.parametrize(
    ("rpc", "why"),
    [
        ({"url": "http://10.0.0.7:8545"}, "loopback"),
        ({"url": "https://127.0.0.1:8545"}, "loopback"),
        ({"url": "http://localhost.evil:8545"}, "loopback"),
        ({"url": "http://127.0.0.1:1", "cookieFile": "/etc/shadow"}, "under /node"),
        ({"url": "http://127.0.0.1:1", "cookieFile": "/node/../etc/shadow"}, "under /node"),
        ({"url": "http://127.0.0.1:1", "cookieFile": "node/data/.cookie"}, "under /node"),
    ],
)
def test_the_sidecar_refuses_a_plan_that_reaches_outside_its_pod_or_node(
    rpc: dict[str, Any], why: str
) -> None:
    text = plan_json("litecoin", [process("node", url="http://127.0.0.1:19443/")])
    body = text.replace('"url": "http://127.0.0.1:19443/"', f'"url": "{rpc["url"]}"')
    if "cookieFile" in rpc:
        body = body.replace('"cookieFile": null', f'"cookieFile": "{rpc["cookieFile"]}"')
    with pytest.raises(ProbePlanError, match=why):
        parse_plan(body)


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"version": 2}', '{"version": 1, "chain": "x", "processes": []}', "{"],
)
def test_a_broken_plan_is_refused(text: str) -> None:
    with pytest.raises(ProbePlanError):
        parse_plan(text)


def test_report_entries_and_readiness() -> None:
    syncing = report_entry(
        ProbeResult(ProcessStatus.SYNCING, height=5, network_height=9, peers=1, sync_progress=0.5)
    )
    starting = report_entry(ProbeResult(ProcessStatus.STARTING, message="Loading block index"))
    assert syncing == {
        "status": "syncing",
        "message": None,
        "height": 5,
        "network_height": 9,
        "peers": 1,
        "sync_progress": 0.5,
    }
    assert all_ready({"node": syncing})
    assert not all_ready({"node": syncing, "beacon": starting})
    assert all_ready({"node": syncing, "beacon": starting}, "node")
    assert not all_ready({"node": syncing}, "other")
    assert not all_ready({})


def test_a_report_is_checked_before_it_is_believed() -> None:
    payload = {
        "roles": {
            "node": {
                "status": "syncing",
                "height": 10,
                "network_height": -1,
                "peers": True,
                "sync_progress": math.inf,
                "message": "x" * 10_000,
            },
            "stopped": {"status": "stopped"},
            "odd": {"status": "exploded"},
            "list": [1],
        }
    }
    report = report_of(payload, ["node", "stopped", "odd", "list", "absent"])
    assert list(report) == ["node"]
    seen = report["node"]
    assert (seen.status, seen.height, seen.network_height, seen.peers, seen.sync_progress) == (
        ProcessStatus.SYNCING,
        10,
        None,
        None,
        None,
    )
    assert seen.message is not None and len(seen.message) <= 4096
    assert report_of("not a dict", ["node"]) == {} and report_of({"roles": 3}, ["node"]) == {}


RUNNING = ContainerState("node", ProcessStatus.RUNNING, ready=True)
NOT_READY = ContainerState("node", ProcessStatus.STARTING, reason="NotReady")
CRASHING = ContainerState("node", ProcessStatus.ERROR, reason="CrashLoopBackOff", message="m")
SYNCING = ProbeResult(ProcessStatus.SYNCING, height=3, network_height=8, peers=2, sync_progress=0.4)
WARMING = ProbeResult(ProcessStatus.STARTING, message="Loading block index")


@pytest.mark.parametrize(
    ("container", "seen", "status", "height", "message"),
    [
        # The kubelet says it runs: the probe decides, as the agent's probe does for a unit.
        (RUNNING, SYNCING, ProcessStatus.SYNCING, 3, None),
        (RUNNING, WARMING, ProcessStatus.STARTING, None, "Loading block index"),
        (NOT_READY, SYNCING, ProcessStatus.SYNCING, 3, None),
        (NOT_READY, WARMING, ProcessStatus.STARTING, None, "Loading block index"),
        # Anything else is the kubelet's to say.
        (CRASHING, SYNCING, ProcessStatus.ERROR, None, "m"),
    ],
)
def test_with_probes(
    container: ContainerState,
    seen: ProbeResult,
    status: ProcessStatus,
    height: int | None,
    message: str | None,
) -> None:
    (out,) = with_probes([container], {"node": seen})
    assert (out.status, out.height, out.message) == (status, height, message)


def test_an_unreachable_sidecar_keeps_the_kubelets_view_with_a_message() -> None:
    (out,) = with_probes([RUNNING], None, "no answer from 10.1.2.3:9797 (ConnectError)")
    assert out.status == ProcessStatus.RUNNING and out.height is None
    assert out.message == "probe sidecar: no answer from 10.1.2.3:9797 (ConnectError)"
    # A container that does not run is not blamed on the sidecar.
    assert with_probes([CRASHING], None, "down") == [CRASHING]


def test_status_carries_the_metrics_and_the_phase_follows_the_probe() -> None:
    consensus = ContainerState("consensus", ProcessStatus.RUNNING, ready=True)
    containers = with_probes(
        [ContainerState("execution", ProcessStatus.RUNNING, ready=True), consensus],
        {
            "execution": SYNCING,
            "consensus": ProbeResult(ProcessStatus.RUNNING, height=99, sync_progress=1.0),
        },
    )
    pod = {"metadata": {"name": "n-0"}, "status": {"phase": "Running"}}
    phase, _ = node_phase(DesiredState.RUNNING, containers, STS, pod)
    assert phase == Phase.SYNCING
    body = status_body(
        generation=1,
        revision=1,
        phase=phase,
        message=None,
        containers=containers,
        render_error=None,
    )
    # The printer column shows the first role's height (the execution client's).
    assert body["height"] == 3
    execution = body["containers"][0]
    assert {k: execution[k] for k in ("height", "networkHeight", "peers", "syncProgress")} == {
        "height": 3,
        "networkHeight": 8,
        "peers": 2,
        "syncProgress": 0.4,
    }
    assert "networkHeight" not in body["containers"][1]

    class _Meta:
        generation = 1

    class _Obj:
        metadata = _Meta()
        status = body

    # The backend reports them to the control plane as the agent would.
    execution_seen, consensus_seen = observed_processes(_Obj())
    assert (
        execution_seen.status,
        execution_seen.height,
        execution_seen.network_height,
        execution_seen.peers,
        execution_seen.sync_progress,
    ) == (ProcessStatus.SYNCING, 3, 8, 2, 0.4)
    assert (consensus_seen.height, consensus_seen.sync_progress) == (99, 1.0)


def test_the_default_probe_image_is_the_image_the_operator_deployment_runs() -> None:
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/operator/deployment.yaml").read_text())
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == [OPERATOR_IMAGE]


@pytest.mark.parametrize(
    ("args", "plan", "error"),
    [
        (["--listen", "9797"], None, "expected HOST:PORT"),
        (["--listen", "0.0.0.0:70000"], None, "expected HOST:PORT"),
        (["--interval", "0"], None, "must be positive"),
        ([], "missing", "cannot read the probe plan"),
        ([], '{"version": 1}', "no processes"),
        ([], plan_json("dogecoin", [process("node")]), "no adapter for chain"),
    ],
)
def test_the_probe_command_refuses_what_it_cannot_follow(
    tmp_path: Path, args: list[str], plan: str | None, error: str
) -> None:
    from typer.testing import CliRunner

    from nodeplane.cli.main import app

    path = tmp_path / "plan.json"
    if plan is None:
        path.write_text(plan_json("litecoin", [process("node")]))
    elif plan != "missing":
        path.write_text(plan)
    result = CliRunner().invoke(app, ["operator", "probe", "--plan", str(path), *args])
    assert result.exit_code == 2
    assert error in " ".join(result.output.split())
