"""Entry point of the `nodeplane` command.

Each command's module is imported when a command line names it (cli/lazy.py), so that a command
pays only for what it uses: `nodeplane nodes list` loads neither the agent nor the operator.
"""

import typer

from nodeplane.cli.lazy import lazy_group

app = typer.Typer(
    cls=lazy_group(
        {
            "login": "nodeplane.cli.login:login",
            "server": "nodeplane.cli.serving:server",
            "up": "nodeplane.cli.serving:up",
            "agent": "nodeplane.cli.agent:agent_app",
            "operator": "nodeplane.cli.operator:operator_app",
            "nodes": "nodeplane.cli.nodes:nodes_app",
            "executors": "nodeplane.cli.executors:executors_app",
            "incidents": "nodeplane.cli.incidents:incidents_app",
            "keys": "nodeplane.cli.keys:keys_app",
            "members": "nodeplane.cli.members:members_app",
        }
    ),
    help="nodeplane: a self-hosted control plane for blockchain nodes.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """nodeplane: declare nodes once, run them on your own hosts and clusters."""
