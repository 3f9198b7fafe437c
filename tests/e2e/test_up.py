"""`nodeplane up --demo` from a fresh data directory shows a live node within a minute."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import wait_for
from tests.support.gql import Client
from tests.support.server import free_port


def start_up(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEPLANE_ADMIN")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodeplane",
            "up",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--driver",
            "process",
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=env,
    )


def stop_up(proc: subprocess.Popen[bytes], data_dir: Path) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    leftovers = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "Ctrl-C leaves no node process running"


def demo_node(client: Client) -> dict[str, Any] | None:
    items = client('{ nodes(filter: {name: "demo-ltc"}) { items { id name phase observed } } }')[
        "nodes"
    ]["items"]
    return items[0] if items else None


def height(node: dict[str, Any]) -> int:
    value: int = node["observed"]["processes"][0]["height"]
    return value


def test_up_demo_runs_a_live_node_and_reuses_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "up"
    port = free_port()
    started = time.monotonic()
    proc = start_up(data_dir, port, tmp_path / "up-1.log")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().strip() == f"NODEPLANE_URL=http://127.0.0.1:{port}"
        banner = (tmp_path / "up-1.log").read_text()
        password = re.search(r"password: (\S+)", banner)
        assert password, banner
        client = Client(f"http://127.0.0.1:{port}")
        token = client(
            'mutation($p: String!) { login(email: "admin@localhost", password: $p) { token } }',
            {"p": password.group(1)},
        )["login"]["token"]
        client = client.as_(token)
        running = wait_for(
            lambda: (n := demo_node(client)) is not None and n["phase"] == "RUNNING" and n,
            timeout=60 - (time.monotonic() - started),
            what="demo node running within a minute",
        )
        first_height = height(running)
        wait_for(
            lambda: (n := demo_node(client)) is not None and height(n) > first_height,
            timeout=30,
            what="blocks mined",
        )
        node_id = running["id"]
        first_pid = running["observed"]["processes"][0]["pid"]
    finally:
        stop_up(proc, data_dir)

    # A second `up` reuses everything: same admin (no new password), same node, running again.
    proc = start_up(data_dir, port, tmp_path / "up-2.log")
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        assert "password:" not in (tmp_path / "up-2.log").read_text()
        # Ctrl-C stopped the node (the process driver's children are `up`'s), so running again
        # is a new litecoind: the last report of the first `up` still says the old one ran.
        again = wait_for(
            lambda: (
                (n := demo_node(client)) is not None
                and n["phase"] == "RUNNING"
                and n["observed"]["processes"][0]["pid"] != first_pid
                and n
            ),
            timeout=60,
            what="demo node running again",
        )
        assert again["id"] == node_id
        assert height(again) >= first_height

        # A third `up` on the same data directory stops at once, naming the lock's holder.
        other = start_up(data_dir, free_port(), tmp_path / "up-3.log")
        try:
            assert other.wait(timeout=60) == 1
        finally:
            if other.poll() is None:
                other.kill()
                other.wait()
        said = (tmp_path / "up-3.log").read_text()
        assert str(data_dir / "agent") in said and f"pid {proc.pid}" in said, said
        node = demo_node(client)
        assert node is not None and node["phase"] == "RUNNING", node
    finally:
        stop_up(proc, data_dir)
