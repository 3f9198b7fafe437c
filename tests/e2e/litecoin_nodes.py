"""What the resilience and hostile-input scenarios look at: nodes, processes, logs and the feed.

Processes are counted from `/proc` (the sandbox's own `/proc` under systemd, so pids compare with
the unit's MainPID); a litecoind belongs to a node when one of its argv words is exactly
`-datadir=<node_dir>/data`. litecoind writes one "Litecoin Core version" line to its debug.log per
start, which counts starts across agent restarts without trusting the agent's own bookkeeping.
"""

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import wait_for
from tests.e2e.test_agent_litecoin import executor_id, litecoin_spec, node
from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, EVENTS, LIFECYCLE, Org
from tests.support.tls import TLS

__all__ = ["executor_id", "litecoin_spec", "node"]

LITECOIND = "litecoind"
START_LINE = "Litecoin Core version"
LOCK_FAILURE = "Cannot obtain a lock on data directory"


def create_node(org: Org, agent: AgentProcess, name: str, **spec: Any) -> str:
    """Create a litecoin regtest node on `agent`'s executor; its id."""
    created = org.owner(
        CREATE_NODE,
        {
            "input": {
                "executorId": executor_id(org, agent),
                "name": name,
                "spec": litecoin_spec(**spec),
            }
        },
    )["createNode"]
    node_id: str = created["id"]
    return node_id


def lifecycle(org: Org, node_id: str, action: str) -> int:
    """Request START, STOP or RESTART; the new revision."""
    revision: int = org.owner(LIFECYCLE, {"id": node_id, "action": action})[
        "requestNodeLifecycleAction"
    ]["revision"]
    return revision


def wait_phase(
    org: Org, node_id: str, phase: str, *, revision: int | None = None, timeout: float = 90
) -> dict[str, Any]:
    """Wait until the node is in `phase` (having observed `revision`, if given); the node."""

    def reached() -> dict[str, Any] | None:
        n = node(org, node_id)
        if n["phase"] != phase:
            return None
        if revision is not None and n["observedRevision"] != revision:
            return None
        return n

    found: dict[str, Any] = wait_for(reached, timeout=timeout, what=f"{node_id} {phase}")
    return found


# ---- processes ------------------------------------------------------------------------------


def proc_dir(agent: AgentProcess) -> Path:
    """Where the agent's node processes appear: the sandbox's /proc under systemd."""
    if agent.driver == "systemd":
        assert agent.sandbox is not None
        return agent.sandbox.proc_dir
    return Path("/proc")


def _cmdline(proc: Path, pid: str) -> list[str]:
    try:
        raw = (proc / pid / "cmdline").read_bytes()
    except OSError:
        return []
    return [w.decode(errors="replace") for w in raw.split(b"\0") if w]


def node_pids(agent: AgentProcess, name: str) -> list[int]:
    """Every litecoind running on node `name`'s data directory (pids in the driver's namespace)."""
    proc = proc_dir(agent)
    word = f"-datadir={agent.node_dir(name) / 'data'}"
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(proc, entry.name)
        if argv and Path(argv[0]).name == LITECOIND and word in argv:
            pids.append(int(entry.name))
    return sorted(pids)


def cmdline(agent: AgentProcess, pid: int) -> list[str]:
    """A process's argv as the kernel holds it."""
    return _cmdline(proc_dir(agent), str(pid))


def single_pid(agent: AgentProcess, name: str) -> int:
    """The one litecoind of node `name`; fails on none or a duplicate."""
    pids = node_pids(agent, name)
    assert len(pids) == 1, f"{name}: expected exactly one litecoind, found {pids}"
    assert agent.main_pid(name) == pids[0], f"{name}: driver says {agent.main_pid(name)}"
    return pids[0]


def debug_log(agent: AgentProcess, name: str) -> Path:
    return agent.node_dir(name) / "data" / "regtest" / "debug.log"


def start_count(agent: AgentProcess, name: str) -> int:
    """How many times litecoind started on this node's data (from its own debug.log)."""
    path = debug_log(agent, name)
    if not path.exists():
        return 0
    return path.read_text(errors="replace").count(START_LINE)


def lock_failures(agent: AgentProcess, name: str) -> int:
    """Starts refused because another litecoind held the data directory: duplicates that tried."""
    path = agent.node_dir(name) / "logs" / "node.log"
    if not path.exists():
        return 0
    return path.read_text(errors="replace").count(LOCK_FAILURE)


def block_count(agent: AgentProcess, name: str) -> int:
    """`getblockcount` over the node's cookie-authenticated RPC."""
    conf = (agent.node_dir(name) / "config" / "litecoin.conf").read_text()
    match = re.search(r"^rpcport=(\d+)$", conf, re.MULTILINE)
    assert match, conf
    cookie = (agent.node_dir(name) / "data" / "regtest" / ".cookie").read_text().strip()
    user, _, password = cookie.partition(":")
    response = httpx.post(
        f"http://127.0.0.1:{match.group(1)}/",
        json={"jsonrpc": "1.0", "id": "t", "method": "getblockcount", "params": []},
        auth=(user, password),
        timeout=5,
        verify=TLS,
    )
    response.raise_for_status()
    height: int = response.json()["result"]
    return height


def unit_definition(agent: AgentProcess, name: str, role: str = "node") -> Path:
    """The unit's definition on disk: the unit file, or the process driver's state file."""
    unit = f"nodeplane-{name}-{role}.service"
    if agent.driver == "systemd":
        assert agent.sandbox is not None
        return agent.sandbox.unit_dir / unit
    return agent.data_dir / "supervisor" / f"{unit}.json"


def unit_active_state(agent: AgentProcess, name: str, role: str = "node") -> str:
    """systemd's ActiveState, or the process driver's recorded state."""
    unit = f"nodeplane-{name}-{role}.service"
    if agent.driver == "systemd":
        assert agent.sandbox is not None
        out = agent.sandbox.systemctl("show", "-p", "ActiveState", "--value", unit, check=False)
        return out.stdout.strip()
    path = unit_definition(agent, name, role)
    if not path.exists():
        return "inactive"
    state: str = json.loads(path.read_text())["runtime"]["state"]
    return state


# ---- the agent's log ------------------------------------------------------------------------


class LogWatcher:
    """Reads the agent's JSON log from where it is now; waits for records."""

    def __init__(self, agent: AgentProcess) -> None:
        self.path = agent.log_path
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """Records written since the last read."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a traceback or other plain output
            if isinstance(record, dict):
                records.append(record)
        return records

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """The first new record matching `predicate`, polling every few milliseconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.read():
                if predicate(record):
                    return record
            time.sleep(0.005)
        raise AssertionError(f"no matching record in {self.path} within {timeout}s")


def all_records(agent: AgentProcess) -> list[dict[str, Any]]:
    """Every JSON record of the agent's log so far."""
    watcher = LogWatcher(agent)
    watcher.offset = 0
    return watcher.read()


# ---- the events feed ------------------------------------------------------------------------


def feed(org: Org, **flt: Any) -> list[dict[str, Any]]:
    """Every event of the organization matching the filter, oldest first."""
    items: list[dict[str, Any]] = []
    after = None
    while True:
        page = org.owner(EVENTS, {"filter": flt or None, "first": 100, "after": after})["events"]
        items += page["items"]
        if not page["pageInfo"]["hasNextPage"]:
            return list(reversed(items))
        after = page["pageInfo"]["endCursor"]


# ---- files ----------------------------------------------------------------------------------


def tree(root: Path) -> set[Path]:
    """Every path under `root` (files, directories, links), without following links."""
    if not root.exists():
        return set()
    return {p for p in root.rglob("*")}
