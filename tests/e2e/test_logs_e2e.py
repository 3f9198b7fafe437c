"""Live logs end to end: a real litecoind under a real agent, read with `nodeplane nodes logs`.

- A line litecoind writes (a block it mines on request) reaches `logs -f` within 2 s.
- The level filter drops lines under the minimum: Litecoin Core 0.21 tags no levels, so the
  test appends lines in Bitcoin Core's newer forms (`[net] …` a debug category, `[warning]`)
  to the same log file the supervisor writes litecoind's output to, beside litecoind's own.
- When the viewer leaves, the agent stops tailing within one poll period (its `poll_wait`,
  10 s in these agents; it is woken at once, so well under it).
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.conftest import wait_for
from tests.e2e.litecoin_nodes import create_node, rpc, wait_phase
from tests.support.agent import AgentProcess
from tests.support.fleet import Org
from tests.support.server import ServerProcess

POLL_WAIT = 10.0  # the agents' [intervals] poll_wait (tests/support/agent.py)


class CliFollow:
    """`nodeplane nodes logs NODE -f` as a user runs it; each stdout line with its arrival."""

    def __init__(self, server: ServerProcess, token: str, node: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodeplane", "nodes", "logs", node, "-f", *args],
            env={**os.environ, "NODEPLANE_URL": server.url, "NODEPLANE_TOKEN": token},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def wait_line(self, needle: str, timeout: float = 20) -> float:
        """When a line containing `needle` was printed."""
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if needle in line:
                return at

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def node_log(agent: AgentProcess, name: str) -> Path:
    return agent.node_dir(name) / "logs" / "node.log"


def written_at(path: Path, needle: str, timeout: float = 10) -> float:
    """When a line containing `needle` appeared in `path` (watched every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"{needle!r} never written to {path}")


def agent_records(agent: AgentProcess, event: str) -> list[dict[str, object]]:
    found = []
    for line in agent.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


def mine_one(agent: AgentProcess, name: str) -> str:
    """Have litecoind mine a block (it logs `UpdateTip: new best=<hash>`); the hash."""
    descriptor = rpc(agent, name, "getdescriptorinfo", "raw(51)")["descriptor"]
    block: str = rpc(agent, name, "generatetodescriptor", 1, descriptor, timeout=30)[0]
    return block


def test_litecoind_lines_reach_logs_follow_and_the_agent_stops_when_the_viewer_leaves(
    e2e_org: Org, e2e_server: ServerProcess, agent: AgentProcess
) -> None:
    node_id = create_node(e2e_org, agent, "ltc-logs")
    wait_phase(e2e_org, node_id, "RUNNING")
    path = node_log(agent, "ltc-logs")
    assert "Litecoin Core version" in path.read_text()

    cli = CliFollow(e2e_server, e2e_org.owner.token, "ltc-logs", "--tail", "1000")
    try:
        # The initial tail holds litecoind's start-up lines.
        cli.wait_line("Litecoin Core version", timeout=30)
        # A line written now reaches the CLI within 2 s of being written.
        for _ in range(3):
            block = mine_one(agent, "ltc-logs")
            wrote = written_at(path, f"new best={block}")
            printed = cli.wait_line(f"new best={block}", timeout=10)
            assert printed - wrote < 2.0, f"line printed {printed - wrote:.2f}s after written"
        assert len(agent_records(agent, "logs.session_started")) == 1
    finally:
        cli.stop()
    left = time.monotonic()
    wait_for(
        lambda: agent_records(agent, "logs.session_stopped"),
        timeout=POLL_WAIT,
        what="the agent stopping its tail",
        interval=0.1,
    )
    assert time.monotonic() - left < POLL_WAIT


def test_the_level_filter_drops_lines_under_the_minimum(
    e2e_org: Org, e2e_server: ServerProcess, agent: AgentProcess
) -> None:
    node_id = create_node(e2e_org, agent, "ltc-levels")
    wait_phase(e2e_org, node_id, "RUNNING")
    path = node_log(agent, "ltc-levels")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a") as f:
        f.write(f"{stamp} [net] debug-line-1 connection from peer=0\n")
        f.write(f"{stamp} [warning] warn-line-1 disk space is low\n")
        f.write(f"{stamp} ERROR: error-line-1 ReadBlockFromDisk failed\n")
    block = mine_one(agent, "ltc-levels")
    written_at(path, f"new best={block}")

    def read(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "nodeplane", "nodes", "logs", "ltc-levels", "-o", "json",
             "--tail", "200", *args],
            env={**os.environ, "NODEPLANE_URL": e2e_server.url,
                 "NODEPLANE_TOKEN": e2e_org.owner.token},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def texts(lines: list[str]) -> str:
        return "\n".join(json.loads(line)["text"] for line in lines)

    everything = read()
    assert "debug-line-1" in texts(everything) and f"new best={block}" in texts(everything)
    levels = {json.loads(line)["text"].split()[1]: json.loads(line)["level"] for line in everything}
    assert levels["[net]"] == "debug" and levels["[warning]"] == "warn"
    assert levels["ERROR:"] == "error"

    info = texts(read("--level", "info"))
    assert "debug-line-1" not in info
    assert f"new best={block}" in info and "warn-line-1" in info and "error-line-1" in info
    warn = texts(read("--level", "warn"))
    assert "warn-line-1" in warn and "error-line-1" in warn
    assert f"new best={block}" not in warn and "Litecoin Core version" not in warn
    assert texts(read("--level", "error")).strip().endswith("ReadBlockFromDisk failed")

    # Another organization's owner gets "not found", typed, from the CLI.
    from tests.support.fleet import make_org

    other = make_org(e2e_server.url, e2e_org.admin)
    refused = subprocess.run(
        [sys.executable, "-m", "nodeplane", "nodes", "logs", node_id],
        env={**os.environ, "NODEPLANE_URL": e2e_server.url, "NODEPLANE_TOKEN": other.owner.token},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "not found" in refused.stderr
