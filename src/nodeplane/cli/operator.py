"""`nodeplane operator`: run the Kubernetes operator, and show what it holds."""

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from nodeplane.cli.common import print_error
from nodeplane.executor.operator.images import OPERATOR_IMAGE, PROBE_PORT_DEFAULT
from nodeplane.protocol import node_name_problem

operator_app = typer.Typer(
    help="The operator: runs nodes as BlockchainNodes on Kubernetes.", no_args_is_help=True
)
console = Console(stderr=True)

KubeconfigOption = typer.Option(
    None,
    "--kubeconfig",
    envvar="KUBECONFIG",
    help="Kubeconfig file; without it the in-cluster service account (else ~/.kube/config).",
)
NamespaceOption = typer.Option(
    None,
    "--namespace",
    "-n",
    envvar="NODEPLANE_OPERATOR_NAMESPACE",
    help="Namespace of the BlockchainNodes and the Lease (default: the service account's).",
)
LeaseOption = typer.Option("nodeplane-operator", "--lease-name", help="Name of the Lease.")
_CLIENT_VERSION = re.compile(r"^([a-z0-9][a-z0-9-]{0,31})=(.+)$")


def _fail(message: str, code: int = 2) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def _extra_versions(pairs: list[str]) -> dict[str, tuple[str, ...]]:
    from nodeplane.protocol.spec import VERSION_PATTERN

    out: dict[str, list[str]] = {}
    for pair in pairs:
        match = _CLIENT_VERSION.fullmatch(pair)
        if not match or not re.fullmatch(VERSION_PATTERN, match.group(2)):
            raise _fail(f"--client-version {pair!r}: expected CLIENT=VERSION, e.g. geth=1.14.12")
        out.setdefault(match.group(1), []).append(match.group(2))
    return {client: tuple(versions) for client, versions in out.items()}


@operator_app.command()
def run(
    name: str = typer.Option(
        ..., "--name", envvar="NODEPLANE_EXECUTOR_NAME", help="The executor's name."
    ),
    control_plane_url: str = typer.Option(
        ..., "--control-plane-url", envvar="NODEPLANE_CONTROL_PLANE_URL"
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        envvar="NODEPLANE_API_KEY_FILE",
        help="File holding the executor API key (a mounted Secret).",
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="NODEPLANE_API_KEY", help="The executor API key itself."
    ),
    kubeconfig: Path | None = KubeconfigOption,
    namespace: str | None = NamespaceOption,
    state_dir: Path = typer.Option(
        Path("/var/lib/nodeplane-operator"), "--state-dir", help="Where held specs are kept."
    ),
    lease_name: str = LeaseOption,
    lease_duration: float = typer.Option(15.0, "--lease-duration"),
    lease_renew_deadline: float = typer.Option(10.0, "--lease-renew-deadline"),
    lease_retry: float = typer.Option(2.0, "--lease-retry"),
    heartbeat: float = typer.Option(5.0, "--heartbeat"),
    reconcile: float = typer.Option(5.0, "--reconcile"),
    report: float = typer.Option(10.0, "--report"),
    metrics: float = typer.Option(
        30.0,
        "--metrics-interval",
        help="Seconds between reports of metric values alone (height, peers, CPU, disk).",
    ),
    resync: float = typer.Option(30.0, "--resync", help="Controller resync, seconds."),
    client_version: list[str] = typer.Option(
        [], "--client-version", help="Offer another image tag: CLIENT=VERSION (repeatable)."
    ),
    probe_image: str = typer.Option(
        OPERATOR_IMAGE,
        "--probe-image",
        envvar="NODEPLANE_PROBE_IMAGE",
        help="Image of each node's probe sidecar (runs `nodeplane operator probe`).",
    ),
    log_level: str = typer.Option("info", "--log-level"),
    log_format: str = typer.Option("auto", "--log-format", help="json, human or auto."),
) -> None:
    """Run the operator in the foreground (what its Deployment runs)."""
    from nodeplane.controlplane.logging import configure_logging
    from nodeplane.executor.operator.leader import LeadershipLost, LeaseConfig
    from nodeplane.executor.operator.main import OperatorSettings, run_operator
    from nodeplane.executor.runtime.runtime import Intervals

    if problem := node_name_problem(name):
        raise _fail(f"--name {name!r}: {problem}")
    if api_key is None and api_key_file is None:
        raise _fail("give --api-key-file (or --api-key)")
    try:
        key = api_key or (api_key_file.read_text().strip() if api_key_file else "")
    except OSError as exc:
        raise _fail(f"cannot read the API key: {exc}") from None
    if not key:
        raise _fail("the API key is empty")
    try:
        lease = LeaseConfig(lease_name, lease_duration, lease_renew_deadline, lease_retry)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = OperatorSettings(
        name=name,
        control_plane_url=control_plane_url,
        api_key=key,
        kubeconfig=kubeconfig,
        namespace=namespace,
        state_dir=state_dir,
        lease=lease,
        intervals=Intervals(
            heartbeat=heartbeat, reconcile=reconcile, report=report, metrics=metrics
        ),
        resync=resync,
        extra_versions=_extra_versions(client_version),
        probe_image=probe_image,
    )
    configure_logging(log_level, None if log_format == "auto" else log_format == "json")

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM (a Deployment's pod stopping) ends the loops cleanly, releasing the Lease.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await run_operator(settings)

    lost: str | None = None
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(main())
    except* LeadershipLost as group:
        lost = str(group.exceptions[0])
    if lost is not None:
        # Exit, as client-go's leaders do: the Deployment starts it again as a candidate.
        raise _fail(f"lost the lease: {lost}", code=1)


@operator_app.command()
def probe(
    plan: Path = typer.Option(..., "--plan", help="The probe plan (JSON, from the ConfigMap)."),
    listen: str = typer.Option(
        f"0.0.0.0:{PROBE_PORT_DEFAULT}", "--listen", help="HOST:PORT to serve /status, /ready on."
    ),
    interval: float = typer.Option(5.0, "--interval", help="Seconds between probes."),
    log_level: str = typer.Option("info", "--log-level"),
    log_format: str = typer.Option("json", "--log-format", help="json, human or auto."),
) -> None:
    """Run a node's probe sidecar: ask each role over loopback, serve what it saw (read-only)."""
    from nodeplane.chains.installed import ADAPTERS
    from nodeplane.controlplane.logging import configure_logging
    from nodeplane.executor.operator.probe import ProbePlanError, parse_plan
    from nodeplane.executor.operator.probe_server import serve_probe

    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(f"--listen {listen!r}: expected HOST:PORT")
    if interval <= 0:
        raise _fail("--interval must be positive")
    try:
        probe_plan = parse_plan(plan.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"cannot read the probe plan: {exc}") from None
    except ProbePlanError as exc:
        raise _fail(str(exc)) from None
    adapter = next((a for a in ADAPTERS if a.chain == probe_plan.chain), None)
    if adapter is None:
        raise _fail(f"no adapter for chain {probe_plan.chain!r}")
    configure_logging(log_level, None if log_format == "auto" else log_format == "json")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_probe(probe_plan, adapter, host.strip("[]"), int(port_text), interval))


@operator_app.command()
def status(
    kubeconfig: Path | None = KubeconfigOption,
    namespace: str | None = NamespaceOption,
    lease_name: str = LeaseOption,
) -> None:
    """Show the Lease holder and every BlockchainNode with its phase."""
    from lightkube import ApiError, Client
    from lightkube.resources.coordination_v1 import Lease

    from nodeplane.executor.operator.main import config_namespace, kube_config
    from nodeplane.executor.operator.resource import BlockchainNode

    try:
        config = kube_config(kubeconfig)
        ns = namespace or config_namespace(config)
        client = Client(config=config, namespace=ns)
        try:
            lease = client.get(Lease, lease_name, namespace=ns)
            spec = lease.spec
            holder = (spec.holderIdentity if spec else None) or "nobody"
            renewed = spec.renewTime.isoformat() if spec and spec.renewTime else "never"
            leader = f"leader {holder} (renewed {renewed})"
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            leader = "no operator has run here (no Lease)"
        nodes = list(client.list(BlockchainNode, namespace=ns))
    except ApiError as exc:
        raise _fail(f"Kubernetes API: {exc.status.message}", code=1) from None
    except Exception as exc:  # a missing kubeconfig, an unreachable server
        raise _fail(f"cannot reach Kubernetes: {exc}", code=1) from None
    out = Console()
    out.print(f"namespace [bold]{ns}[/bold]: {leader}")
    table = Table("node", "phase", "revision", "generation", "desired", "message")
    for bn in nodes:
        meta: Any = bn.metadata
        spec_: dict[str, Any] = bn.spec if isinstance(bn.spec, dict) else {}
        st: dict[str, Any] = bn.status if isinstance(bn.status, dict) else {}
        generation = f"{st.get('observedGeneration', '-')}/{meta.generation}"
        table.add_row(
            meta.name,
            st.get("phase", "-"),
            str(spec_.get("revision", "-")),
            generation,
            str(spec_.get("desiredState", "running")),
            ("deleting; " if meta.deletionTimestamp else "") + (st.get("message") or ""),
        )
    out.print(table)
