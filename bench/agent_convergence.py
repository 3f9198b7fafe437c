"""How long a lifecycle request takes to show up as the node's phase, with a real agent.

A control plane on SQLite, one agent on the process driver, a litecoin regtest node: the time from
sending the request to the API reporting the target phase (the agent's poll, apply, probe, report
and heartbeat all included).
"""

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, LIFECYCLE, NODE, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token

LITECOIN = {
    "chain": "litecoin",
    "network": "regtest",
    "clients": {"node": {"name": "litecoind", "version": "0.21.2.1"}},
}


def _wait_phase(client: Client, node_id: str, phase: str, timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        node: dict[str, Any] | None = client(NODE, {"id": node_id})["node"]
        if node is not None and node["phase"] == phase:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise TimeoutError(f"{phase} not reached in {timeout}s")


def run(rounds: int) -> dict[str, list[float]]:
    """Samples (seconds) per transition."""
    workdir = Path(tempfile.mkdtemp(prefix="nodeplane-bench-agent-"))
    server = ServerProcess(
        database_url=f"sqlite:///{workdir / 'cp.db'}", workdir=workdir, heartbeat_timeout=30
    )
    server.start()
    agent: AgentProcess | None = None
    try:
        token = admin_token(server.url)
        org = make_org(server.url, Client(server.url, token))
        agent = AgentProcess(
            workdir=workdir / "agent",
            server_url=server.url,
            api_key=org.executor_key(),
            driver="process",
        )
        agent.start()
        deadline = time.monotonic() + 60
        while not org.owner("{ executors { id } }")["executors"]:
            if time.monotonic() > deadline:
                raise TimeoutError("agent did not connect")
            time.sleep(0.2)
        executor_id = org.owner("{ executors { id } }")["executors"][0]["id"]
        samples: dict[str, list[float]] = {
            "deploy → running": [],
            "stop → stopped": [],
            "start → running": [],
            "restart → running": [],
        }
        for i in range(rounds):
            sent = time.perf_counter()
            node_id = org.owner(
                CREATE_NODE,
                {"input": {"executorId": executor_id, "name": f"b{i}", "spec": LITECOIN}},
            )["createNode"]["id"]
            _wait_phase(org.owner, node_id, "RUNNING")
            samples["deploy → running"].append(time.perf_counter() - sent)
            for action, phase, key in (
                ("STOP", "STOPPED", "stop → stopped"),
                ("START", "RUNNING", "start → running"),
            ):
                sent = time.perf_counter()
                org.owner(LIFECYCLE, {"id": node_id, "action": action})
                _wait_phase(org.owner, node_id, phase)
                samples[key].append(time.perf_counter() - sent)
            sent = time.perf_counter()
            revision = org.owner(LIFECYCLE, {"id": node_id, "action": "RESTART"})[
                "requestNodeLifecycleAction"
            ]["revision"]
            while True:
                node = org.owner(NODE, {"id": node_id})["node"]
                if node["phase"] == "RUNNING" and node["observedRevision"] == revision:
                    break
                time.sleep(0.05)
            samples["restart → running"].append(time.perf_counter() - sent)
            org.owner("mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }", {"id": node_id})
        return samples
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        # Process-driver nodes outlive their agent by design; the benchmark's must not.
        subprocess.run(["pkill", "-KILL", "-f", str(workdir)], check=False)
