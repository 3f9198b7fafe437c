"""Build a NodeSpec document from `nodes deploy` flags; the control plane validates it."""

import json
import sys
from pathlib import Path
from typing import Any

import typer


def parse_client(value: str) -> tuple[str, str, str]:
    """`role=name:version` → (role, name, version)."""
    role, eq, rest = value.partition("=")
    name, colon, version = rest.partition(":")
    if not (eq and colon and role and name and version):
        raise typer.BadParameter(
            f"{value!r} is not role=name:version (e.g. node=litecoind:0.21.4)",
            param_hint="--client",
        )
    return role.strip(), name.strip(), version.strip()


def parse_override_arg(value: str) -> tuple[str, str]:
    """`role=FLAG` → (role, flag); the flag may itself hold `=` (node=-maxconnections=8)."""
    role, eq, flag = value.partition("=")
    if not (eq and role and flag):
        raise typer.BadParameter(
            f"{value!r} is not role=FLAG (e.g. node=-maxconnections=8)",
            param_hint="--override-arg",
        )
    return role.strip(), flag


def read_spec_file(path: str) -> dict[str, Any]:
    """A spec document from a JSON file (`-` for stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--spec-file"
        ) from None
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}", param_hint="--spec-file") from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(f"{path} must hold a JSON object", param_hint="--spec-file")
    return spec


def build_spec(
    base: dict[str, Any],
    *,
    chain: str | None,
    network: str | None,
    node_type: str | None,
    clients: list[str],
    override_args: list[str],
    storage_size: str | None,
) -> dict[str, Any]:
    """`base` (from --spec-file, or empty) with every given flag applied on top of it."""
    spec: dict[str, Any] = json.loads(
        json.dumps(base)
    )  # a deep copy: the caller's document stays as it was
    for key, value in (("chain", chain), ("network", network), ("nodeType", node_type)):
        if value is not None:
            spec[key] = value
    for role, name, version in map(parse_client, clients):
        spec.setdefault("clients", {})[role] = {"name": name, "version": version}
    for role, flag in map(parse_override_arg, override_args):
        overrides = spec.setdefault("overrides", {})
        overrides.setdefault("args", {}).setdefault(role, []).append(flag)
    if storage_size is not None:
        spec.setdefault("storage", {})["size"] = storage_size
    missing = [
        flag
        for flag, key in (("--chain", "chain"), ("--network", "network"), ("--client", "clients"))
        if not spec.get(key)
    ]
    if missing:
        raise typer.BadParameter(
            f"missing {', '.join(missing)} (or give a --spec-file that has them)"
        )
    return spec
