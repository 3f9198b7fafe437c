"""Issue 10, part 4: the agent's own /metrics on a loopback port, read while a real agent runs
real litecoind nodes: reconciles by outcome, failed applies and process restarts per node, the
nodes held and their processes, the control plane reached. Parsed with prometheus_client's own
parser, as Prometheus would read it."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import _cleanup_units, _online, wait_for
from tests.e2e.scenario import Fleet, kill_main_process, litecoin_spec
from tests.support.agent import AgentProcess
from tests.support.fleet import Org
from tests.support.server import ServerProcess, free_port


@pytest.fixture
def metered_agent(
    e2e_org: Org, e2e_server: ServerProcess, tmp_path: Path
) -> Iterator[AgentProcess]:
    """An agent on the process driver serving its metrics on a loopback port."""
    proc = AgentProcess(
        workdir=tmp_path / "agent",
        server_url=e2e_server.url,
        api_key=e2e_org.executor_key(),
        driver="process",
        supervision={"restart_delay": 0.5},
        metrics_listen=f"127.0.0.1:{free_port()}",
    )
    proc.start()
    try:
        wait_for(lambda: _online(e2e_org, proc.name), timeout=60, what="agent online")
        yield proc
    finally:
        proc.stop()
        _cleanup_units(proc)


def scrape(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the agent serves, keyed by (sample name, sorted labels)."""
    assert agent.metrics_listen is not None
    response = httpx.get(f"http://{agent.metrics_listen}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str
) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_agent_metrics_follow_reconciles_failures_and_restarts(
    e2e_org: Org, metered_agent: AgentProcess
) -> None:
    agent = metered_agent
    fleet = Fleet(e2e_org, agent)
    first = scrape(agent)
    assert (
        value(
            first,
            "nodeplane_executor_info",
            name=agent.name,
            kind="agent",
            version=first_version(first),
        )
        == 1
    )
    assert value(first, "nodeplane_executor_control_plane_reachable") == 1
    assert value(first, "nodeplane_executor_last_sync_timestamp_seconds") > 0

    # A node that runs: reconciled, held, its process counted by status.
    node_id = fleet.create("ltc-metered", litecoin_spec())
    fleet.wait_phase(node_id, "RUNNING")
    running = wait_for(
        lambda: (
            (s := scrape(agent))
            and value(s, "nodeplane_executor_processes", status="running") == 1
            and s
        ),
        timeout=20,
        what="the running process counted",
    )
    assert value(running, "nodeplane_executor_nodes") == 1
    assert (
        value(running, "nodeplane_executor_reconcile_duration_seconds_count", outcome="applied")
        >= 1
    )
    assert value(running, "nodeplane_executor_apply_errors_total", node="ltc-metered") == 0

    # Killed: the supervisor restarts it, and the restart is counted for that node.
    kill_main_process(agent, "ltc-metered")
    wait_for(
        lambda: (
            value(scrape(agent), "nodeplane_executor_process_restarts_total", node="ltc-metered")
            >= 1
        ),
        timeout=30,
        what="the restart counted",
    )

    # A node whose directory is taken by a file cannot be applied: each failed try is counted.
    blocked = agent.node_dir("ltc-blocked")
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a directory")
    blocked_id = fleet.create("ltc-blocked", litecoin_spec())
    fleet.wait_phase(blocked_id, "ERROR", timeout=60)
    failed = wait_for(
        lambda: (
            (s := scrape(agent))
            and value(s, "nodeplane_executor_apply_errors_total", node="ltc-blocked") >= 1
            and s
        ),
        timeout=20,
        what="the failed apply counted",
    )
    assert (
        value(failed, "nodeplane_executor_reconcile_duration_seconds_count", outcome="apply_failed")
        >= 1
    )
    assert value(failed, "nodeplane_executor_nodes") == 2
    # Out of the way, the next try applies it.
    blocked.unlink()
    fleet.wait_phase(blocked_id, "RUNNING", timeout=90)
    assert value(scrape(agent), "nodeplane_executor_processes", status="running") == 2


def first_version(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    """The version label the agent reports (whatever this checkout's version is)."""
    for (name, labels), _ in samples.items():
        if name == "nodeplane_executor_info":
            return dict(labels)["version"]
    raise AssertionError("no nodeplane_executor_info")
