"""`nodeplane up`: the control plane on SQLite plus a local agent, in one process, for one host.

On a fresh data directory it creates the admin (password from NODEPLANE_ADMIN_PASSWORD, or generated
and printed once) and an executor key for the local agent, kept under `<data_dir>/agent/`. `--demo`
also deploys a litecoin regtest node and mines a block every few seconds so there is something live
to watch. A second `up` reuses everything.
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx
import structlog
import uvicorn
from rich.console import Console
from rich.panel import Panel

from nodeplane.controlplane.app import create_app
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.http_server import uvicorn_config
from nodeplane.controlplane.services.accounts import DEFAULT_ADMIN_EMAIL, bootstrap_admin
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.migrate import migrate
from nodeplane.executor.agent.config import (
    AgentConfig,
    AgentSection,
    ControlPlaneSection,
    IntervalsSection,
)
from nodeplane.executor.agent.drivers import detect_driver_kind
from nodeplane.executor.agent.instance_lock import AgentLock, lock_data_dir
from nodeplane.executor.agent.main import build_runtime
from nodeplane.executor.runtime.runtime import ExecutorRuntime

log = structlog.get_logger(__name__)
console = Console(stderr=True)

DEMO_NODE = "demo-ltc"
DEMO_BLOCK_SECONDS = 5.0


class _EmbeddedServer(uvicorn.Server):
    """Uvicorn without its own signal handling: `up` owns Ctrl-C for all of its parts."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def local_agent_name() -> str:
    """A DNS label for this host's agent."""
    raw = socket.gethostname().split(".")[0].lower()
    name = "".join(c if c.isalnum() else "-" for c in raw).strip("-")[:50]
    return f"{name or 'local'}-agent"


class GraphQL:
    """Just enough of the API for `up` to set itself up."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"{self.url}/graphql",
                json={"query": query, "variables": variables or {}},
                headers=headers,
            )
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(body["errors"][0]["message"])
        return body["data"]


def _read_key(key_file: Path) -> str | None:
    return key_file.read_text().strip() if key_file.exists() else None


def _save_key(key_file: Path, secret: str) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(secret)


async def _executor_key(
    api: GraphQL, key_file: Path, email: str, password: str | None, agent_name: str
) -> str:
    if (existing := _read_key(key_file)) is not None:
        return existing
    if password is None:
        raise RuntimeError(
            f"{key_file} is missing; set NODEPLANE_ADMIN_PASSWORD so `up` can make a new agent key"
        )
    login = await api(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": email, "p": password},
    )
    api.token = login["login"]["token"]
    # A lost key file: the new key is made for the agent's existing executor, which is bound to
    # the lost key and refuses any other.
    executors = (await api("{ executors { id name } }"))["executors"]
    ours = next((e["id"] for e in executors if e["name"] == agent_name), None)
    created = await api(
        "mutation($e: UUID) "
        '{ createApiKey(name: "local agent", kind: EXECUTOR, executorId: $e) { secret } }',
        {"e": ours},
    )
    secret: str = created["createApiKey"]["secret"]
    _save_key(key_file, secret)
    return secret


async def _deploy_demo(api: GraphQL, agent_name: str) -> None:
    """Deploy the demo node once the agent has declared what it can run."""
    for _ in range(120):
        executors = (await api("{ executors { id name capabilities } }"))["executors"]
        ours = next((e for e in executors if e["name"] == agent_name), None)
        if ours and ours["capabilities"].get("chains"):
            break
        await asyncio.sleep(0.5)
    else:
        raise RuntimeError("the local agent did not connect")
    existing = (await api('{ nodes(filter: {name: "demo-ltc"}) { items { id name } } }'))["nodes"][
        "items"
    ]
    if any(n["name"] == DEMO_NODE for n in existing):
        return
    litecoin = next((c for c in ours["capabilities"]["chains"] if c["chain"] == "litecoin"), None)
    versions = litecoin["roles"][0]["clients"][0]["versions"] if litecoin else []
    if not versions:
        raise RuntimeError("litecoind is not installed on this host (apt-get install litecoind)")
    spec = {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": versions[0]}},
        "storage": {"size": "1Gi"},
    }
    await api(
        "mutation($i: CreateNodeInput!) { createNode(input: $i) { id } }",
        {"i": {"executorId": ours["id"], "name": DEMO_NODE, "spec": spec}},
    )


def _demo_rpc(node_dir: Path) -> tuple[int, str, str]:
    port = int(json.loads((node_dir / "ports.json").read_text())["node.rpc"])
    user, _, password = (node_dir / "data" / "regtest" / ".cookie").read_text().partition(":")
    return port, user, password


async def _mine_demo_blocks(agent_data_dir: Path) -> None:
    """Mine a regtest block every few seconds (to an anyone-can-spend script: no wallet needed)."""
    node_dir = agent_data_dir / "nodes" / DEMO_NODE
    async with httpx.AsyncClient(
        timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        while True:
            await asyncio.sleep(DEMO_BLOCK_SECONDS)
            try:
                port = json.loads((node_dir / "ports.json").read_text())["node.rpc"]
                user, _, password = (
                    (node_dir / "data" / "regtest" / ".cookie").read_text().partition(":")
                )
                await http.post(
                    f"http://127.0.0.1:{port}/",
                    json={
                        "jsonrpc": "1.0",
                        "id": "up",
                        "method": "generatetodescriptor",
                        "params": [1, "raw(51)"],
                    },
                    auth=(user, password),
                )
            except (OSError, KeyError, ValueError, httpx.HTTPError):
                continue  # not started yet, or stopped by the user: try again later


async def run_up(*, host: str, port: int, data_dir: Path, demo: bool, driver: str) -> None:
    """Start everything, print where to go, and run until Ctrl-C.

    The local agent's data directory is locked first (DataDirLocked, a RuntimeError, when
    another `up` or agent runs on it), before anything else starts."""
    with lock_data_dir(data_dir / "agent", uuid.uuid4()) as lock:
        await _run_up(host=host, port=port, data_dir=data_dir, demo=demo, driver=driver, lock=lock)


async def _run_up(
    *, host: str, port: int, data_dir: Path, demo: bool, driver: str, lock: AgentLock
) -> None:
    settings = dataclasses.replace(
        Settings(), database_url=f"sqlite:///{data_dir / 'nodeplane.db'}"
    )
    await asyncio.to_thread(migrate, settings.database_url)
    db = Database(settings.database_url)
    try:
        admin = await bootstrap_admin(db, settings)
    finally:
        await db.close()
    email = admin.email if admin else (settings.admin_email or DEFAULT_ADMIN_EMAIL)
    password = (admin.generated_password if admin else None) or settings.admin_password

    url = f"http://{host}:{port}"
    control_plane = create_app(settings, manage_gc=True)
    server = _EmbeddedServer(uvicorn_config(control_plane, host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server_task = asyncio.create_task(server.serve(), name="up-server")
    while not server.started:
        if server_task.done():
            await server_task
            raise RuntimeError(f"the control plane did not start on {url}")
        await asyncio.sleep(0.05)

    api = GraphQL(url)
    agent_dir = data_dir / "agent"
    key = await _executor_key(api, agent_dir / "agent.key", email, password, local_agent_name())
    config = AgentConfig(
        agent=AgentSection(name=local_agent_name(), data_dir=agent_dir, driver=driver),
        control_plane=ControlPlaneSection(url=url, api_key=key),
        intervals=IntervalsSection(heartbeat=2, reconcile=2, report=3),
    )
    runtime: ExecutorRuntime = build_runtime(
        config, instance_id=lock.instance_id, previous_instance_ids=lock.previous_instance_ids
    )
    agent_task = asyncio.create_task(runtime.run(), name="up-agent")
    tasks = [agent_task]
    if demo:
        if api.token is None and password is not None:
            login = await api(
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
                {"e": email, "p": password},
            )
            api.token = login["login"]["token"]
        if api.token is not None:
            await _deploy_demo(api, config.agent.name)
        tasks.append(asyncio.create_task(_mine_demo_blocks(agent_dir), name="up-miner"))

    lines = [f"nodeplane is up at [bold]{url}[/bold]  (GraphQL at {url}/graphql)"]
    if admin and admin.generated_password:
        lines.append(
            f"admin: {email}  password: [bold]{admin.generated_password}[/bold]  (shown once)"
        )
    else:
        lines.append(f"admin: {email}")
    lines.append(
        f"local agent {config.agent.name} ({detect_driver_kind(config.agent.driver)} driver)"
    )
    if demo:
        lines.append(
            f"demo node {DEMO_NODE}: litecoin regtest, a block every {DEMO_BLOCK_SECONDS:.0f} s"
        )
    lines.append(f"data: {data_dir}   Ctrl-C stops everything")
    console.print(Panel("\n".join(lines), title="nodeplane up"))
    print(f"NODEPLANE_URL={url}", flush=True)

    await stop.wait()
    console.print("stopping…")
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    await _stop_local_nodes(runtime)
    await runtime.client.aclose()
    control_plane.begin_shutdown()
    server.should_exit = True
    await server_task


async def _stop_local_nodes(runtime: ExecutorRuntime) -> None:
    """On the process driver nodes are children of `up`: stop them, keeping their data."""
    backend = runtime.backend
    driver = getattr(backend, "driver", None)
    if driver is None or type(driver).__name__ != "ProcessDriver":
        return  # systemd units outlive `up` by design
    for name in await driver.list_units():
        with contextlib.suppress(Exception):
            await driver.stop(name)


def default_up_dir() -> Path:
    """`up`'s data directory: the control plane's data directory."""
    from nodeplane.controlplane.config import default_data_dir

    return Path(os.environ.get("NODEPLANE_UP_DIR", default_data_dir()))
