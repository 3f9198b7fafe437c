"""A command imports only what it uses (issue 8: `nodes list` answers in 300 ms), while every
command is still listed, helps and is suggested for a typo: subcommands are registered lazily
(cli/lazy.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from nodeplane.cli.main import app
from tests.cli.conftest import Cli, deploy
from tests.support.fleet import FakeExecutor, Org

# Modules (and their submodules) that `nodeplane nodes list` has no use for: other commands and
# what they run, the parts of httpx, httpcore and rich that the CLI made lazy, and asyncio (the
# client is synchronous).
NOT_FOR_NODES_LIST = (
    "nodeplane.cli.agent",
    "nodeplane.cli.operator",
    "nodeplane.cli.serving",
    "nodeplane.cli.login",
    "nodeplane.cli.executors",
    "nodeplane.cli.incidents",
    "nodeplane.cli.keys",
    "nodeplane.cli.members",
    "nodeplane.cli.lifecycle",
    "nodeplane.cli.edit",
    "nodeplane.cli.logs",
    "nodeplane.executor",
    "nodeplane.controlplane",
    "nodeplane.chains",
    "nodeplane.protocol.spec_edit",
    "nodeplane.protocol.capabilities",
    "nodeplane.protocol.logs",
    "httpx._main",
    "click",
    "pygments",
    "h2",
    "hpack",
    "rich.progress",
    "rich.syntax",
    "rich.status",
    "rich.table",
    "asyncio",
    # The CLI's models are msgspec's, and typer before 0.29 coerces parameters without pydantic:
    # pydantic's import alone was a third of the command's time.
    "pydantic",
    "pydantic_core",
)

# Runs a command line as the `nodeplane` script does, then writes the names of the modules it
# imported to the file named by the first argument.
RECORDED_RUN = """
import atexit, json, sys
path, sys.argv = sys.argv[1], ["nodeplane", *sys.argv[2:]]

def record():
    open(path, "w").write(json.dumps({"modules": sorted(sys.modules)}))

atexit.register(record)
from nodeplane.cli.main import app
app()
"""

COMMANDS = {
    "": [
        "login",
        "server",
        "up",
        "agent",
        "operator",
        "nodes",
        "executors",
        "incidents",
        "keys",
        "members",
    ],
    "agent": ["run", "install", "uninstall", "status"],
    "operator": ["run", "probe", "status"],
    "nodes": [
        "start",
        "stop",
        "restart",
        "delete",
        "edit",
        "rollback",
        "list",
        "get",
        "deploy",
        "events",
        "logs",
        "revisions",
    ],
    "executors": ["list", "rebind"],
    "incidents": ["list"],
    "keys": ["create", "list", "revoke"],
    "members": ["list", "invite", "role", "remove", "revoke-sessions"],
}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_nodes_list_imports_only_what_it_uses(
    cli: Cli, org: Org, executor: FakeExecutor, tmp_path: Path
) -> None:
    deploy(org, executor, "ltc-1")
    modules = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RECORDED_RUN, str(modules), "nodes", "list"],
        capture_output=True,
        text=True,
        env=cli.environment(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ltc-1" in done.stdout and executor.name in done.stdout
    recorded = json.loads(modules.read_text())
    loaded = set(recorded["modules"])
    assert {"nodeplane.cli.nodes", "nodeplane.cli.client", "httpx"} <= loaded
    assert sorted(m for m in loaded if _within(m, NOT_FOR_NODES_LIST)) == []


def test_help_lists_every_command_in_order() -> None:
    root = get_command(app)
    assert isinstance(root, TyperGroup)
    runner = CliRunner()
    for group_name, expected in COMMANDS.items():
        group = root.get_command(typer.Context(root), group_name) if group_name else root
        assert isinstance(group, TyperGroup), group_name
        assert group.list_commands(typer.Context(group)) == expected
        path = [group_name] if group_name else []
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, shown.output
        for name in expected:
            assert f" {name} " in shown.output, (group_name, name)
            command = runner.invoke(app, [*path, name, "--help"], env={"COLUMNS": "200"})
            assert command.exit_code == 0, (group_name, name, command.output)
            assert "Usage:" in command.output


@pytest.mark.parametrize(
    ("args", "suggestion"), [(["nodes", "lst"], "'list'"), (["nodez"], "'nodes'")]
)
def test_a_mistyped_command_is_suggested(args: list[str], suggestion: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert f"Did you mean {suggestion}?" in result.output


@pytest.mark.process
def test_nodeplane_help_in_a_process_lists_the_commands(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "nodeplane", "--help"],
        capture_output=True,
        text=True,
        env=Cli(None, None, tmp_path / "config").environment(),
        timeout=120,
        check=True,
    )
    for name in COMMANDS[""]:
        assert f" {name} " in shown.stdout
