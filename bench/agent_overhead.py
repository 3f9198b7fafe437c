"""P5 of issue 8: what an agent holding many real litecoind regtest nodes costs its host.

A control plane on SQLite, one agent on the process driver with the default intervals (what an
installed agent runs with, not the tests' fast ones), N litecoin regtest nodes deployed through
the API. Once every node is RUNNING and has settled, the agent process alone is measured over a
window: resident memory (VmRSS, sampled) and CPU time (utime + stime) over wall time. The clients
are the agent's children (it spawns them, each in a session of its own, and they outlive it), but
a process's own utime/stime never include its children's, and VmRSS is the agent's own pages.
Short-lived helpers the agent runs and reaps (`litecoind --version` when it detects
capabilities) land in its cutime/cstime: they are the agent's cost, so they are added, as long
as no client exited in the window (a reaped client would be counted too; checked).

`python -m bench.agent_overhead --nodes 5 --seconds 30` runs it alone and prints the agent's pid
when the window opens (for py-spy).
"""

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess, admin_token

from bench.loadgen.scenarios import Row

RSS_GOAL_MB = 80.0
CPU_GOAL_PERCENT = 1.0

LITECOIN = {
    "chain": "litecoin",
    "network": "regtest",
    "clients": {"node": {"name": "litecoind", "version": "0.21.2.1"}},
}

_TICKS = os.sysconf("SC_CLK_TCK")

NODES = "query($first: Int!) { nodes(first: $first) { items { id name phase } } }"


@dataclass(frozen=True)
class Overhead:
    """What the agent cost over the measured window."""

    nodes: int
    running: int  # nodes RUNNING when the window closed
    window_s: float
    rss_max_mb: float
    rss_mean_mb: float
    rss_samples: int
    peak_rss_mb: float  # VmHWM: the agent's peak since it started (deploying included)
    cpu_s: float  # the agent's own utime + stime in the window
    helper_cpu_s: float  # reaped children's (helpers the agent ran) in the window
    clients_are_children: bool
    client_exits: int  # clients that exited in the window (their CPU would be in helper_cpu_s)
    agent_pid: int

    @property
    def cpu_percent(self) -> float:
        return 100 * (self.cpu_s + self.helper_cpu_s) / self.window_s

    def rows(self) -> list[Row]:
        load = f"{self.nodes} litecoind regtest nodes, {self.window_s:.0f} s"
        cpu = (
            f"{self.cpu_percent:.2f} % of a core (agent {100 * self.cpu_s / self.window_s:.2f} "
            f"%, helpers it ran {100 * self.helper_cpu_s / self.window_s:.2f} %)"
        )
        return [
            Row(
                "P5 RSS",
                "sqlite",
                load,
                f"< {RSS_GOAL_MB:g} MB",
                f"max {self.rss_max_mb:.1f} MB, mean {self.rss_mean_mb:.1f} MB "
                f"({self.rss_samples} samples; peak since start {self.peak_rss_mb:.1f} MB)",
                self.rss_max_mb < RSS_GOAL_MB,
            ),
            Row(
                "P5 CPU",
                "sqlite",
                load,
                f"< {CPU_GOAL_PERCENT:g} % of a core",
                cpu,
                self.cpu_percent < CPU_GOAL_PERCENT,
            ),
        ]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(own utime + stime, reaped children's cutime + cstime) in clock ticks."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _ppid(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def _processes_under(directory: Path) -> list[int]:
    """Pids whose command line names `directory` (the benchmark's clients)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(directory).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _end_clients(directory: Path) -> None:
    """Stop the benchmark's clients (they outlive their agent by design), by pid."""
    pids = _processes_under(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _processes_under(directory):
        time.sleep(0.5)
    for pid in _processes_under(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _config(agent: AgentProcess) -> str:
    """agent.toml as an installed agent has it: the default intervals and supervision."""
    return f"""
[agent]
name = "{agent.name}"
data_dir = "{agent.data_dir}"
driver = "process"
unit_dir = "{agent.workdir / "units"}"

[control_plane]
url = "{agent.server_url}"
api_key = "{agent.api_key}"

[logging]
level = "info"
format = "json"
"""


def _wait_running(owner: Client, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        items = owner(NODES, {"first": count})["nodes"]["items"]
        running = sum(1 for n in items if n["phase"] == "RUNNING")
        if running == count:
            return
        if time.monotonic() > deadline:
            phases = sorted({n["phase"] for n in items})
            raise TimeoutError(f"{running}/{count} nodes RUNNING after {timeout:g}s ({phases})")
        time.sleep(1.0)


def run(
    nodes: int,
    seconds: float,
    *,
    settle: float = 20.0,
    sample_every: float = 2.0,
    announce: bool = False,
) -> Overhead:
    """Deploy `nodes` litecoind regtest nodes on one agent, measure it for `seconds`."""
    workdir = Path(tempfile.mkdtemp(prefix="nodeplane-bench-p5-"))
    server = ServerProcess(
        database_url=f"sqlite:///{workdir / 'cp.db'}", workdir=workdir, heartbeat_timeout=60
    )
    server.start()
    agent: AgentProcess | None = None
    try:
        org = make_org(server.url, Client(server.url, admin_token(server.url)))
        agent = AgentProcess(
            workdir=workdir / "agent",
            server_url=server.url,
            api_key=org.executor_key(),
            driver="process",
        )
        agent.workdir.mkdir(parents=True)
        agent.config_path.write_text(_config(agent))
        agent.start()
        assert agent.popen is not None
        pid = agent.popen.pid
        deadline = time.monotonic() + 60
        while not (executors := org.owner("{ executors { id } }")["executors"]):
            if time.monotonic() > deadline:
                raise TimeoutError("agent did not connect")
            time.sleep(0.5)
        executor_id = executors[0]["id"]
        for i in range(nodes):
            org.owner(
                CREATE_NODE,
                {"input": {"executorId": executor_id, "name": f"p5n{i}", "spec": LITECOIN}},
            )
        _wait_running(org.owner, nodes, timeout=120 + 6 * nodes)
        time.sleep(settle)

        clients = _processes_under(agent.data_dir)
        clients_are_children = bool(clients) and all(_ppid(c) == pid for c in clients)
        if announce:
            print(f"agent pid {pid}: measuring {seconds:g}s", file=sys.stderr, flush=True)
        rss: list[int] = []
        started = time.monotonic()
        own0, reaped0 = _cpu_ticks(pid)
        while (elapsed := time.monotonic() - started) < seconds:
            rss.append(_status_kb(pid, "VmRSS"))
            time.sleep(min(sample_every, max(seconds - elapsed, 0.0)))
        own1, reaped1 = _cpu_ticks(pid)
        window = time.monotonic() - started
        rss.append(_status_kb(pid, "VmRSS"))
        peak = _status_kb(pid, "VmHWM")
        alive = set(_processes_under(agent.data_dir))
        items = org.owner(NODES, {"first": nodes})["nodes"]["items"]
        return Overhead(
            nodes=nodes,
            running=sum(1 for n in items if n["phase"] == "RUNNING"),
            window_s=window,
            rss_max_mb=max(rss) / 1024,
            rss_mean_mb=statistics.fmean(rss) / 1024,
            rss_samples=len(rss),
            peak_rss_mb=peak / 1024,
            cpu_s=(own1 - own0) / _TICKS,
            helper_cpu_s=(reaped1 - reaped0) / _TICKS,
            clients_are_children=clients_are_children,
            client_exits=len(set(clients) - alive),
            agent_pid=pid,
        )
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        _end_clients(workdir)
        # 50 regtest data directories: a few hundred MB a run.
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=20.0)
    args = parser.parse_args()
    result = run(args.nodes, args.seconds, settle=args.settle, announce=True)
    print(result)
    for row in result.rows():
        print(row.markdown())


if __name__ == "__main__":
    main()
