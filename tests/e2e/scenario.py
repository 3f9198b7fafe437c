"""Building blocks of the end-to-end scenarios: nodes through the API, chain clients over RPC."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nodeplane.chains.rpc import read_cookie
from tests.e2e.conftest import wait_for
from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, EVENTS, LIFECYCLE, NODE, Org
from tests.support.tls import TLS

LITECOIND_VERSION = "0.21.2.1"
# Mining goes to an anyone-can-spend script: no wallet needed.
ANYONE_CAN_SPEND = "raw(51)"


def litecoin_spec(*args: str, **extra: Any) -> dict[str, Any]:
    """A litecoin regtest node, with extra command-line flags for litecoind."""
    spec: dict[str, Any] = {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": LITECOIND_VERSION}},
        **extra,
    }
    if args:
        spec["overrides"] = {"args": {"node": list(args)}}
    return spec


@dataclass
class Fleet:
    """One organization's view of its nodes on one agent, through the GraphQL API."""

    org: Org
    agent: AgentProcess

    @property
    def executor_id(self) -> str:
        executors = self.org.owner("{ executors { id name } }")["executors"]
        executor_id: str = next(e["id"] for e in executors if e["name"] == self.agent.name)
        return executor_id

    def capabilities(self) -> dict[str, Any]:
        """What the agent declared at its last heartbeat."""
        executors = self.org.owner("{ executors { name capabilities } }")["executors"]
        caps: dict[str, Any] = next(
            e["capabilities"] for e in executors if e["name"] == self.agent.name
        )
        return caps

    def create(self, name: str, spec: dict[str, Any]) -> str:
        """Create a node on the agent; returns its id."""
        created = self.org.owner(
            CREATE_NODE,
            {"input": {"executorId": self.executor_id, "name": name, "spec": spec}},
        )["createNode"]
        node_id: str = created["id"]
        return node_id

    def node(self, node_id: str) -> dict[str, Any] | None:
        """The node as the API shows it, or None once it is gone."""
        data: dict[str, Any] | None = self.org.owner(NODE, {"id": node_id})["node"]
        return data

    def process(self, node_id: str, role: str = "node") -> dict[str, Any] | None:
        """The observed process of `role`, as last reported."""
        node = self.node(node_id)
        if node is None or node["observed"] is None:
            return None
        return next((p for p in node["observed"]["processes"] if p["role"] == role), None)

    def lifecycle(self, node_id: str, action: str) -> dict[str, Any]:
        """START, STOP or RESTART; returns the node as the mutation answered."""
        data: dict[str, Any] = self.org.owner(LIFECYCLE, {"id": node_id, "action": action})[
            "requestNodeLifecycleAction"
        ]
        return data

    def delete(self, node_id: str, *, retain_data: bool) -> dict[str, Any]:
        data: dict[str, Any] = self.org.owner(
            "mutation($id: UUID!, $r: Boolean!) { deleteNode(nodeId: $id, retainData: $r) "
            "{ id phase } }",
            {"id": node_id, "r": retain_data},
        )["deleteNode"]
        return data

    def wait(self, node_id: str, predicate: Any, what: str, timeout: float = 60) -> Any:
        """`wait_for`, with what the API and the logs say about the node when it times out."""
        try:
            return wait_for(predicate, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose(node_id)}") from None

    def wait_phase(
        self, node_id: str, phase: str, timeout: float = 90, **process: Any
    ) -> dict[str, Any]:
        """Wait until the node is in `phase` and its process matches `process` (e.g. height=5)."""

        def check() -> dict[str, Any] | None:
            node = self.node(node_id)
            if node is None or node["phase"] != phase:
                return None
            if process:
                observed = node["observed"]["processes"][0]
                if any(observed.get(k) != v for k, v in process.items()):
                    return None
            return node

        result: dict[str, Any] = self.wait(
            node_id, check, f"{node_id} {phase} {process or ''}".strip(), timeout
        )
        return result

    def diagnose(self, node_id: str) -> str:
        """What the API and the node's client logs say, for a failure message."""
        node = self.node(node_id)
        lines = [f"node: {node!r}"]
        if node is not None:
            for log in sorted((self.agent.node_dir(node["name"]) / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                lines += [f"--- {log.name}", *tail]
        if self.agent.log_path.exists():
            agent_log = self.agent.log_path.read_text(errors="replace").splitlines()
            lines += ["--- agent.log", *[line[:300] for line in agent_log[-20:]]]
        return "\n".join(lines)

    def events(self, node_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        """Every event of the node (optionally of one type or `prefix.*`), oldest first."""
        items: list[dict[str, Any]] = []
        after = None
        while True:
            flt: dict[str, Any] = {"nodeId": node_id}
            if type_:
                flt["type"] = type_
            page = self.org.owner(EVENTS, {"filter": flt, "first": 100, "after": after})["events"]
            items += page["items"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        return list(reversed(items))

    def transitions(self, node_id: str) -> list[tuple[str, str]]:
        """The node's phase changes, (from, to), oldest first."""
        return [
            (e["payload"]["from"], e["payload"]["to"])
            for e in self.events(node_id, "node.lifecycle.transition")
        ]


class ChainRpc:
    """JSON-RPC to a node's client on this host: ports from `ports.json`, cookie if it has one."""

    def __init__(self, node_dir: Path, port_key: str, cookie: Path | None = None) -> None:
        self.node_dir = node_dir
        self.port_key = port_key
        self.cookie = cookie

    @classmethod
    def litecoin(cls, node_dir: Path) -> "ChainRpc":
        return cls(node_dir, "node.rpc", node_dir / "data" / "regtest" / ".cookie")

    def port(self, key: str | None = None) -> int:
        ports: dict[str, int] = json.loads((self.node_dir / "ports.json").read_text())
        return ports[key or self.port_key]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one request; results in order, RuntimeError on any error."""
        auth = httpx.BasicAuth(*read_cookie(self.cookie)) if self.cookie else None
        body = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
        response = httpx.post(
            f"http://127.0.0.1:{self.port()}/", json=body, auth=auth, timeout=60, verify=TLS
        )
        answers = sorted(response.json(), key=lambda a: a["id"])
        for (method, _), answer in zip(calls, answers, strict=True):
            if answer.get("error"):
                raise RuntimeError(f"{method}: {answer['error']}")
        return [answer["result"] for answer in answers]

    def __call__(self, method: str, *params: Any) -> Any:
        return self.batch([(method, list(params))])[0]

    def mine(self, blocks: int) -> int:
        """Mine `blocks` regtest blocks; returns the new height."""
        descriptor = self("getdescriptorinfo", ANYONE_CAN_SPEND)["descriptor"]
        self("generatetodescriptor", blocks, descriptor)
        height: int = self("getblockcount")
        return height


def pid_alive(agent: AgentProcess, pid: int) -> bool:
    """Whether `pid` (as the agent's driver numbers it) is a live process."""
    if agent.sandbox is not None:
        stat = agent.sandbox.proc_dir / str(pid) / "stat"
    else:
        stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not yet reaped


def unit_active_state(agent: AgentProcess, node: str, role: str = "node") -> str:
    """`systemctl is-active` in the sandbox; on the process driver, the supervisor's state."""
    unit = f"nodeplane-{node}-{role}.service"
    if agent.sandbox is not None:
        return agent.sandbox.systemctl("is-active", unit, check=False).stdout.strip()
    path = agent.data_dir / "supervisor" / f"{unit}.json"
    if not path.exists():
        return "unknown"
    state: str = json.loads(path.read_text())["runtime"]["state"]
    return state


def kill_main_process(agent: AgentProcess, node: str, role: str = "node") -> int:
    """SIGKILL the client behind a node's unit, as a crash would; returns the killed pid."""
    pid = agent.main_pid(node, role)
    assert pid is not None, f"{node} has no main process"
    if agent.sandbox is not None:
        unit = f"nodeplane-{node}-{role}.service"
        agent.sandbox.systemctl("kill", "--signal=SIGKILL", unit)
    else:
        os.kill(pid, 9)
    wait_for(lambda: not pid_alive(agent, pid), timeout=10, what=f"pid {pid} gone")
    return pid
