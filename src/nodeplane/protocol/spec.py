"""NodeSpec: the one declarative description of a node, shared by both executor backends."""

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from nodeplane.protocol.enums import DesiredState, NodeType, RestartPolicy, ServiceType
from nodeplane.protocol.wire import WireModel

# Identifiers that executors turn into unit names, flags and paths: kept to a safe alphabet.
IDENTIFIER_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
# Kubernetes-style quantities: "100Gi", "2", "500m", "1.5". Their size is bounded when a spec is
# written (protocol.spec_bounds), not here, so specs stored before the bounds still load.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$"
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
CONFIG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ConfigKey = Annotated[str, StringConstraints(pattern=CONFIG_KEY_PATTERN)]

MAX_OVERRIDE_VALUE_LENGTH = 4096
MAX_OVERRIDE_ARGS_PER_ROLE = 64
MAX_OVERRIDE_KEYS_PER_ROLE = 256
MAX_CLIENTS = 8
MAX_RESTART_GENERATION = 2**31 - 1

ConfigValue = str | int | float | bool
_LINE_BREAKS = frozenset("\x85\u2028\u2029")


def _text_problem(value: str) -> str | None:
    if len(value) > MAX_OVERRIDE_VALUE_LENGTH:
        return f"must be at most {MAX_OVERRIDE_VALUE_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 or ch in _LINE_BREAKS for ch in value):
        return "must not contain newlines or other control characters"
    return None


class ClientSelection(WireModel):
    """The client implementation and version that plays one role of a node."""

    name: Identifier
    version: Version


class StorageSpec(WireModel):
    """Volume size and (Kubernetes) storage class for the node's data."""

    size: Quantity = "100Gi"
    storage_class: Identifier | None = None


class ResourceSpec(WireModel):
    """CPU and memory requests and limits; None means the adapter's default."""

    cpu_request: Quantity | None = None
    cpu_limit: Quantity | None = None
    memory_request: Quantity | None = None
    memory_limit: Quantity | None = None


class Overrides(WireModel):
    """User overrides: config-file keys per process and extra command-line flags per role."""

    files: dict[Identifier, dict[ConfigKey, ConfigValue]] = Field(default_factory=dict)
    args: dict[Identifier, list[str]] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _check_files(
        cls, files: dict[str, dict[str, ConfigValue]]
    ) -> dict[str, dict[str, ConfigValue]]:
        for role, entries in files.items():
            if len(entries) > MAX_OVERRIDE_KEYS_PER_ROLE:
                raise ValueError(f"files.{role}: at most {MAX_OVERRIDE_KEYS_PER_ROLE} keys")
            for key, value in entries.items():
                if isinstance(value, str) and (problem := _text_problem(value)):
                    raise ValueError(f"files.{role}.{key} {problem}")
        return files

    @field_validator("args")
    @classmethod
    def _check_args(cls, args: dict[str, list[str]]) -> dict[str, list[str]]:
        for role, flags in args.items():
            if len(flags) > MAX_OVERRIDE_ARGS_PER_ROLE:
                raise ValueError(f"args.{role}: at most {MAX_OVERRIDE_ARGS_PER_ROLE} flags")
            for flag in flags:
                if not flag.startswith("-") or flag.strip("-") == "":
                    raise ValueError(f"args.{role}: {flag!r} is not a flag (must start with '-')")
                if problem := _text_problem(flag):
                    raise ValueError(f"args.{role}: {flag[:40]!r} {problem}")
        return args


class AgentHints(WireModel):
    """Backend hints for the systemd agent."""

    restart_policy: RestartPolicy = RestartPolicy.ON_FAILURE


class OperatorHints(WireModel):
    """Backend hints for the Kubernetes operator."""

    service_type: ServiceType = ServiceType.CLUSTER_IP


DEFAULT_HEALTH_WINDOW_SECONDS = 600
MAX_HEALTH_WINDOW_SECONDS = 7 * 24 * 3600


class RolloutPolicy(WireModel):
    """How a new revision must prove itself: every process of the node running or syncing
    within `health_window_seconds` of being applied, else the executor reports an apply error;
    with `auto_rollback` the control plane then goes back to the last revision that was."""

    health_window_seconds: int = Field(
        default=DEFAULT_HEALTH_WINDOW_SECONDS, ge=1, le=MAX_HEALTH_WINDOW_SECONDS
    )
    auto_rollback: bool = False


class NodeSpec(WireModel):
    """The declarative spec of one node; every write of it is a new revision."""

    chain: Identifier
    network: Identifier
    node_type: NodeType = NodeType.FULL
    clients: dict[Identifier, ClientSelection] = Field(min_length=1, max_length=MAX_CLIENTS)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    overrides: Overrides = Field(default_factory=Overrides)
    desired_state: DesiredState = DesiredState.RUNNING
    restart_generation: int = Field(default=0, ge=0, le=MAX_RESTART_GENERATION)
    agent: AgentHints = Field(default_factory=AgentHints)
    operator: OperatorHints = Field(default_factory=OperatorHints)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)

    @model_validator(mode="after")
    def _overrides_name_known_roles(self) -> "NodeSpec":
        for section, per_role in (("files", self.overrides.files), ("args", self.overrides.args)):
            unknown = sorted(set(per_role) - set(self.clients))
            if unknown:
                raise ValueError(f"overrides.{section} names roles not in clients: {unknown}")
        return self
