"""String-valued enums shared by the control plane, the executors, the CLI and the UI."""

from enum import StrEnum


class DesiredState(StrEnum):
    """What the user wants the node's processes to be."""

    RUNNING = "running"
    STOPPED = "stopped"


class ProcessStatus(StrEnum):
    """Raw per-process status, as reported by an executor."""

    STARTING = "starting"
    RUNNING = "running"
    SYNCING = "syncing"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


class NodePhase(StrEnum):
    """The derived, displayed phase of a node (DESIGN §6); never stored."""

    DELETING = "deleting"
    PROVISIONING = "provisioning"
    ERROR = "error"
    CONFIGURING = "configuring"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STARTING = "starting"
    SYNCING = "syncing"
    RUNNING = "running"


class NodeType(StrEnum):
    """How much history a node keeps."""

    FULL = "full"
    ARCHIVE = "archive"


class ExecutorKind(StrEnum):
    """The backend an executor materializes specs with."""

    AGENT = "agent"
    OPERATOR = "operator"


class LifecycleAction(StrEnum):
    """A change of runtime state requested by a user."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"


class EventLevel(StrEnum):
    """Severity of an event in the feed."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class EventSource(StrEnum):
    """Who produced an event: the control plane itself or an executor's runtime."""

    CONTROL_PLANE = "control_plane"
    RUNTIME = "runtime"


class RestartPolicy(StrEnum):
    """Agent hint: what systemd (or the process driver) does when a process exits."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NO = "no"


class ServiceType(StrEnum):
    """Operator hint: the Kubernetes Service type exposing the node."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
