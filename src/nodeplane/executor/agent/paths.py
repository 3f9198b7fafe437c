"""Where the agent looks for its config and keeps its data by default (no imports: the CLI
loads this for every command)."""

from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/nodeplane/agent.toml")
DEFAULT_DATA_DIR = Path("/var/lib/nodeplane")
