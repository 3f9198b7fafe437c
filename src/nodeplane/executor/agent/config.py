"""The agent's TOML configuration file."""

import socket
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nodeplane.executor.agent.paths import DEFAULT_DATA_DIR
from nodeplane.executor.agent.port_range import PortRange
from nodeplane.executor.runtime.metrics import loopback_problem
from nodeplane.protocol import node_name_problem
from nodeplane.protocol.addresses import parse_listen_address


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentSection(_Section):
    """Who the agent is and where it keeps things."""

    name: str = Field(default_factory=lambda: socket.gethostname().split(".")[0].lower())
    data_dir: Path = DEFAULT_DATA_DIR
    driver: Literal["auto", "systemd", "process"] = "auto"
    unit_dir: Path = Path("/etc/systemd/system")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if problem := node_name_problem(name):
            raise ValueError(f"agent name {name!r}: {problem}")
        return name

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        if not path.is_absolute():
            raise ValueError("data_dir must be an absolute path")
        return path


class ControlPlaneSection(_Section):
    """How to reach the control plane: its URL and an executor API key (inline or in a file)."""

    url: str
    api_key: str | None = None
    api_key_file: Path | None = None

    def key(self) -> str:
        """The API key, read from `api_key_file` when not given inline."""
        if self.api_key:
            return self.api_key
        if self.api_key_file:
            return self.api_key_file.read_text().strip()
        raise ValueError("control_plane needs api_key or api_key_file")


class IntervalsSection(_Section):
    """Loop cadences in seconds."""

    heartbeat: float = Field(default=5.0, gt=0)
    # Every held node is applied again this often although nothing asked (drift: a unit stopped
    # or a config file edited by hand). A new spec is applied at once, a process that ends is
    # restarted by its supervisor, and each report observes every node: this pass only heals
    # what nothing announces. As kubelet's 1-minute sync, not a 5 s one: at 5 s, checking 50
    # nodes' files and units was over half of an idle agent's CPU (docs/benchmarks.md).
    reconcile: float = Field(default=30.0, gt=0)
    # How often the built-in supervisor (the process driver) looks for ended processes and
    # restarts them; None: every `reconcile` seconds, at most 5 s apart.
    supervise: float | None = Field(default=None, gt=0)
    report: float = Field(default=10.0, gt=0)
    metrics: float = Field(default=30.0, gt=0)
    poll_wait: float = Field(default=25.0, gt=0, le=30)

    @property
    def supervise_every(self) -> float:
        """Seconds between the supervisor's passes."""
        return self.supervise if self.supervise is not None else min(self.reconcile, 5.0)


class SupervisionSection(_Section):
    """How node processes are restarted, and when a crash loop is given up (both drivers)."""

    # Seconds before a process that ended is started again (systemd's RestartSec=); the built-in
    # supervisor doubles it after each quick exit, up to max_backoff.
    restart_delay: float = Field(default=5.0, gt=0, le=3600)
    # A run shorter than this is a quick exit; 5 quick exits in a row give the process up.
    stable_after: float = Field(default=30.0, gt=0, le=86400)
    max_backoff: float = Field(default=60.0, gt=0, le=86400)


class PortsSection(_Section):
    """Where nodes' ports come from: `first` to `last` (both included), for a host whose firewall
    opens only those; unset, a client's default port, else one in 20000-31999."""

    first: int | None = Field(default=None, ge=1024, le=65535)
    last: int | None = Field(default=None, ge=1024, le=65535)

    @model_validator(mode="after")
    def _both_in_order(self) -> "PortsSection":
        if (self.first is None) != (self.last is None):
            raise ValueError("first and last go together")
        if self.first is not None and self.last is not None and self.first > self.last:
            raise ValueError(f"first ({self.first}) is above last ({self.last})")
        return self

    def port_range(self) -> PortRange | None:
        """The configured range, or None."""
        if self.first is None or self.last is None:
            return None
        return PortRange(self.first, self.last)


class MetricsSection(_Section):
    """Where the agent serves its own Prometheus metrics (docs/metrics.md), if anywhere:
    `listen = "127.0.0.1:9465"`. Loopback addresses only: the agent has no authentication of
    its own, so a Prometheus on another host scrapes it through something that has."""

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _loopback(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        host, _port = parse_listen_address(listen)
        if problem := loopback_problem(host):
            raise ValueError(problem)
        return listen

    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None."""
        return parse_listen_address(self.listen) if self.listen else None


class LoggingSection(_Section):
    """Log level and format."""

    level: str = "info"
    format: Literal["json", "human", "auto"] = "auto"


class AgentConfig(_Section):
    """The whole agent.toml."""

    agent: AgentSection = Field(default_factory=AgentSection)
    control_plane: ControlPlaneSection
    intervals: IntervalsSection = Field(default_factory=IntervalsSection)
    supervision: SupervisionSection = Field(default_factory=SupervisionSection)
    ports: PortsSection = Field(default_factory=PortsSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)


class ConfigError(Exception):
    """The config file is missing, not TOML, or not valid."""


def load_config(path: Path) -> AgentConfig:
    """Read and validate an agent config file."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{path}: {problems}") from None
