"""`nodeplane agent`: run, install, uninstall and inspect the agent on this host."""

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from nodeplane.cli.common import print_error
from nodeplane.executor.agent.paths import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from nodeplane.executor.agent.config import AgentConfig

# The agent's own modules (config models, unit rendering, the runtime) are imported by the
# commands that use them: every `nodeplane` command loads this module, and `nodeplane nodes list`
# should not pay for the agent's imports.

AGENT_UNIT = "nodeplane-agent.service"

agent_app = typer.Typer(
    help="The agent: runs nodes as systemd units on this host.", no_args_is_help=True
)
console = Console(stderr=True)

ConfigOption = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c", help="Path of agent.toml.")


def _load(path: Path) -> "AgentConfig":
    from nodeplane.executor.agent.config import ConfigError, load_config

    try:
        return load_config(path)
    except (ConfigError, ValueError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None


@agent_app.command()
def run(config: Path = ConfigOption) -> None:
    """Run the agent in the foreground (what the installed service does)."""
    from nodeplane.controlplane.logging import configure_logging
    from nodeplane.executor.agent.instance_lock import DataDirLocked
    from nodeplane.executor.agent.main import run_agent

    cfg = _load(config)
    fmt = cfg.logging.format
    configure_logging(cfg.logging.level, None if fmt == "auto" else fmt == "json")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run_with_task_dump(run_agent(cfg)))
    except DataDirLocked as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None


async def _run_with_task_dump(main: Coroutine[Any, Any, None]) -> None:
    """Run `main`; SIGUSR1 prints every task's stack, for finding what an agent waits on."""

    def dump() -> None:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
    await main


def agent_unit_text(config_path: Path, cfg: "AgentConfig") -> str:
    """The systemd unit that runs this agent, restarting it on failure."""
    from nodeplane import __version__
    from nodeplane.chains.base import ProcessPlan
    from nodeplane.executor.agent.driver import UnitSpec
    from nodeplane.executor.agent.units import render_unit
    from nodeplane.protocol import RestartPolicy

    process = ProcessPlan(
        role="service",
        client="nodeplane",
        version=__version__,
        argv=(sys.executable, "-m", "nodeplane", "agent", "run", "--config", str(config_path)),
        working_dir=cfg.agent.data_dir,
        stop_signal="SIGTERM",
        stop_timeout_s=30,
    )
    unit = UnitSpec(
        name=AGENT_UNIT,
        node="agent",
        role="service",
        process=process,
        restart_policy=RestartPolicy.ON_FAILURE,
    )
    return render_unit(unit)


def _systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        console.print(f"[red]systemctl {' '.join(args)} failed:[/red] {result.stderr.strip()}")
        raise typer.Exit(1)


@agent_app.command()
def install(
    config: Path = ConfigOption, start: bool = typer.Option(True, help="Start it now.")
) -> None:
    """Write and enable nodeplane-agent.service (restarts on failure)."""
    cfg = _load(config)
    cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.agent.unit_dir / AGENT_UNIT
    path.write_text(agent_unit_text(config.resolve(), cfg))
    _systemctl("daemon-reload")
    _systemctl("enable", *(["--now"] if start else []), AGENT_UNIT)
    console.print(f"installed {path}{' and started it' if start else ''}")


@agent_app.command()
def uninstall(config: Path = ConfigOption) -> None:
    """Stop, disable and remove nodeplane-agent.service (nodes keep running)."""
    cfg = _load(config)
    path = cfg.agent.unit_dir / AGENT_UNIT
    subprocess.run(["systemctl", "disable", "--now", AGENT_UNIT], capture_output=True, check=False)
    path.unlink(missing_ok=True)
    _systemctl("daemon-reload")
    console.print(f"removed {path}; node units and data are left as they are")


@agent_app.command()
def status(config: Path = ConfigOption) -> None:
    """Show the agent's service, its control plane and the nodes it holds."""
    import httpx

    from nodeplane.executor.agent.main import state_path
    from nodeplane.executor.runtime.local_state import LocalState

    cfg = _load(config)
    active = subprocess.run(
        ["systemctl", "is-active", AGENT_UNIT], capture_output=True, text=True, check=False
    ).stdout.strip()
    try:
        health = httpx.get(f"{cfg.control_plane.url.rstrip('/')}/healthz", timeout=5).json()
        reach = f"reachable ({json.dumps(health)})"
    except (httpx.HTTPError, ValueError) as exc:
        reach = f"unreachable ({exc})"
    out = Console()
    out.print(f"agent [bold]{cfg.agent.name}[/bold]  service: {active or 'unknown'}")
    out.print(f"control plane {cfg.control_plane.url}: {reach}")
    state = LocalState(state_path(cfg.agent.data_dir))
    state.load()
    table = Table("node", "revision", "applied", "desired", "deleted", "apply error")
    for held in state.nodes.values():
        spec = held.assigned.spec
        table.add_row(
            held.name,
            str(held.assigned.revision),
            str(held.applied_revision),
            spec.desired_state.value if spec else "-",
            "yes" if held.assigned.deleted else "",
            held.apply_error or "",
        )
    out.print(table)
