"""`nodeplane server` and `nodeplane up`: run the control plane (and, with up, a local agent).

What they run is imported inside each command: `nodeplane --help` lists these commands too.
"""

import dataclasses
import os
from pathlib import Path

import typer


def server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    database_url: str | None = typer.Option(
        None,
        help="sqlite:///path or postgresql://...; default: NODEPLANE_DATABASE_URL, else SQLite.",
    ),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    json_logs: bool | None = typer.Option(
        None, "--json-logs/--human-logs", help="Default: JSON unless a terminal."
    ),
    forwarded_allow_ips: str = typer.Option(
        "127.0.0.1,::1",
        envvar="NODEPLANE_FORWARDED_ALLOW_IPS",
        help="Comma-separated proxy addresses (or networks, or *) whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted for the client address; '' trusts none.",
    ),
    workers: int = typer.Option(
        1,
        envvar="NODEPLANE_WORKERS",
        help="Server processes sharing the port, one core each (PostgreSQL only).",
    ),
    metrics_listen: str | None = typer.Option(
        None,
        envvar="NODEPLANE_METRICS_LISTEN",
        help="host:port of a second socket serving /metrics without a token (docs/metrics.md).",
    ),
) -> None:
    """Run the control plane (GraphQL API at /graphql, health at /healthz)."""
    from sqlalchemy.engine import make_url

    from nodeplane.cli.common import print_error
    from nodeplane.controlplane import worker_processes
    from nodeplane.controlplane.app import create_app
    from nodeplane.controlplane.config import Settings
    from nodeplane.controlplane.http_server import GracefulServer, uvicorn_config
    from nodeplane.controlplane.logging import configure_logging
    from nodeplane.controlplane.metrics.endpoint import token_problem
    from nodeplane.controlplane.profiling import profiled, timed_turns
    from nodeplane.protocol.addresses import parse_listen_address

    configure_logging(log_level, json_logs)
    settings = Settings()
    if database_url:
        settings = dataclasses.replace(settings, database_url=database_url)
    settings = dataclasses.replace(settings, metrics_listen=metrics_listen)
    metrics_address = None
    try:
        if metrics_listen:
            metrics_address = parse_listen_address(metrics_listen)
            if metrics_address[1] == port:
                raise ValueError("--metrics-listen needs a port of its own")
        if problem := token_problem(settings.metrics_token):
            raise ValueError(problem)
    except ValueError as exc:
        print_error(f"metrics: {exc}")
        raise typer.Exit(2) from None
    worker_index = os.environ.get(worker_processes.WORKER_ENV)
    if worker_index is None and workers != 1:
        try:
            worker_processes.check_workers(
                workers, make_url(settings.database_url).get_backend_name()
            )
        except ValueError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        typer.echo(
            f"nodeplane control plane on http://{host}:{port} ({workers} workers, supervisor "
            f"pid {os.getpid()})",
            err=True,
        )
        argv = [
            *("--host", host, "--port", str(port), "--log-level", log_level),
            *("--forwarded-allow-ips", forwarded_allow_ips),
            *(("--database-url", settings.database_url) if database_url else ()),
            *(() if json_logs is None else ("--json-logs" if json_logs else "--human-logs",)),
            *(("--metrics-listen", metrics_listen) if metrics_listen else ()),
        ]
        raise typer.Exit(worker_processes.supervise(argv, workers))
    typer.echo(f"nodeplane control plane on http://{host}:{port} (pid {os.getpid()})", err=True)
    control_plane = create_app(settings, manage_gc=True)
    config = uvicorn_config(
        control_plane,
        host,
        port,
        # Sign-in throttling keys on the client address: behind a reverse proxy, that is the
        # address the proxy forwards, believed only from the proxies listed here.
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    # A worker binds the port beside its siblings; a lone server lets uvicorn bind it, unless
    # it also listens for metrics (uvicorn serves one app on the sockets it is given).
    sockets = None
    if worker_index:
        sockets = [worker_processes.reuse_port_socket(host, port)]
    elif metrics_address is not None:
        sockets = [config.bind_socket()]
    if metrics_address is not None and sockets is not None:
        sockets.append(
            worker_processes.reuse_port_socket(*metrics_address, share=bool(worker_index))
        )
    # Each only when its variable is set (benchmarks: controlplane/profiling.py).
    with profiled(), timed_turns():
        GracefulServer(config, control_plane.begin_shutdown).run(sockets=sockets)


def up(
    demo: bool = typer.Option(False, help="Also deploy a litecoin regtest node that mines blocks."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    data_dir: Path | None = typer.Option(None, help="Default: the nodeplane data directory."),
    driver: str = typer.Option("auto", help="Agent driver: auto, systemd or process."),
) -> None:
    """Run the control plane on SQLite and a local agent, on this machine, until Ctrl-C."""
    import asyncio

    from nodeplane.cli.up import default_up_dir, run_up
    from nodeplane.controlplane.logging import configure_logging

    if driver not in ("auto", "systemd", "process"):
        raise typer.BadParameter("driver must be auto, systemd or process")
    configure_logging("warning", None)
    directory = data_dir or default_up_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run_up(host=host, port=port, data_dir=directory, demo=demo, driver=driver))
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
