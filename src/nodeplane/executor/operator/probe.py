"""The probe sidecar's two wire formats: pure functions, no I/O.

In a pod, a chain client's RPC listens on loopback and authenticates with a cookie or JWT file
from the node's directory, so only a container of the same pod can ask it how it is doing. The
`nodeplane-probe` sidecar does that with the adapters' own `probe` code:

- the **plan** (JSON in the node's ConfigMap, mounted at `/node/config/nodeplane-probe.json`)
  says, per role, what `adapter.probe` needs of the ProcessPlan: the client, the network, the
  RPC URL (loopback) and the cookie file (under `/node`). It holds no secret: the sidecar reads
  the cookie from the data volume, as the agent reads it on the host;
- the **report** (`GET /status` on the sidecar) gives per role the status and metrics of a
  ProbeResult: status, message, height, network_height, peers, sync_progress. Never a secret.

The controller reads the report from the pod IP; `report_of` checks what it got, since the
answer comes from inside a pod that runs third-party software.
"""

import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from nodeplane.chains.base import ProbeResult, ProcessPlan, RpcEndpoint
from nodeplane.protocol.enums import ProcessStatus
from nodeplane.protocol.json_values import MAX_JSON_INTEGER
from nodeplane.protocol.observed import MAX_MESSAGE_LENGTH
from nodeplane.protocol.text import storable_excerpt

PLAN_VERSION = 1
PLAN_FILE = "nodeplane-probe.json"
NODE_ROOT = PurePosixPath("/node")
# What a sidecar may report for a role: the statuses of a process that is up. (A stopped or
# crashed container is the kubelet's to report, not the sidecar's.)
REPORTABLE = frozenset({ProcessStatus.STARTING, ProcessStatus.RUNNING, ProcessStatus.SYNCING})
# Roles that answer RPC count as ready (DESIGN §6: running or syncing).
READY_STATUSES = frozenset({ProcessStatus.RUNNING, ProcessStatus.SYNCING})


class ProbePlanError(ValueError):
    """A probe plan the sidecar must not follow (bad JSON, an RPC off loopback, a path outside
    the node's directory)."""


@dataclass(frozen=True)
class ProbePlan:
    """What the sidecar probes: the chain and one ProcessPlan (fields `probe` reads) per role."""

    chain: str
    processes: tuple[ProcessPlan, ...]


def plan_json(chain: str, processes: Sequence[ProcessPlan]) -> str:
    """The plan of a node's processes as the ConfigMap holds it (stable: sorted keys)."""
    body = {
        "version": PLAN_VERSION,
        "chain": chain,
        "processes": [
            {
                "role": p.role,
                "client": p.client,
                "version": p.version,
                "network": p.network,
                "rpc": None
                if p.rpc is None
                else {
                    "url": p.rpc.url,
                    "cookieFile": None if p.rpc.cookie_file is None else str(p.rpc.cookie_file),
                },
            }
            for p in processes
        ],
    }
    return json.dumps(body, sort_keys=True, indent=2) + "\n"


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ProbePlanError(f"{what} must be a non-empty string")
    return value


def _loopback_url(value: Any) -> str:
    url = _text(value, "rpc.url")
    parts = urlsplit(url)
    # The sidecar asks only its own pod: an RPC URL pointing elsewhere is refused.
    try:
        loopback = parts.hostname is not None and ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise ProbePlanError(f"rpc.url {url!r} is not plain HTTP on a loopback address")
    return url


def _node_path(value: Any) -> Path:
    text = _text(value, "rpc.cookieFile")
    path = PurePosixPath(text)
    if not path.is_absolute() or ".." in path.parts or path.parts[:2] != NODE_ROOT.parts[:2]:
        raise ProbePlanError(f"rpc.cookieFile {text!r} is not under {NODE_ROOT}")
    return Path(text)


def parse_plan(text: str) -> ProbePlan:
    """The plan from its JSON; raises ProbePlanError for anything the sidecar must not follow."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ProbePlanError(f"the probe plan is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("version") != PLAN_VERSION:
        raise ProbePlanError(f"the probe plan is not a version {PLAN_VERSION} plan")
    raw = body.get("processes")
    if not isinstance(raw, list) or not raw:
        raise ProbePlanError("the probe plan has no processes")
    processes = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ProbePlanError("a process of the probe plan is not an object")
        rpc = entry.get("rpc")
        endpoint = None
        if rpc is not None:
            if not isinstance(rpc, dict):
                raise ProbePlanError("rpc must be an object")
            cookie = rpc.get("cookieFile")
            endpoint = RpcEndpoint(
                url=_loopback_url(rpc.get("url")),
                cookie_file=None if cookie is None else _node_path(cookie),
            )
        network = entry.get("network")
        processes.append(
            ProcessPlan(
                role=_text(entry.get("role"), "role"),
                client=_text(entry.get("client"), "client"),
                version=_text(entry.get("version"), "version"),
                # The sidecar runs nothing: argv and working directory are not part of the plan.
                argv=(),
                working_dir=Path(str(NODE_ROOT)),
                rpc=endpoint,
                network=None if network is None else _text(network, "network"),
            )
        )
    roles = [p.role for p in processes]
    if len(set(roles)) != len(roles):
        raise ProbePlanError("the probe plan names a role twice")
    return ProbePlan(chain=_text(body.get("chain"), "chain"), processes=tuple(processes))


# ---- the report ------------------------------------------------------------------------------


def report_entry(result: ProbeResult) -> dict[str, Any]:
    """One role of `GET /status`, from what the adapter's probe saw."""
    return {
        "status": result.status.value,
        "message": result.message,
        "height": result.height,
        "network_height": result.network_height,
        "peers": result.peers,
        "sync_progress": result.sync_progress,
    }


def all_ready(report: Mapping[str, Mapping[str, Any]], role: str | None = None) -> bool:
    """Whether every role of the report (or just `role`) answers RPC: running or syncing."""
    entries = [report.get(role)] if role is not None else list(report.values())
    return bool(entries) and all(
        e is not None and e.get("status") in {s.value for s in READY_STATUSES} for e in entries
    )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_JSON_INTEGER else None


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0.0 <= number <= 1.0 else None


def report_of(payload: Any, roles: Sequence[str]) -> dict[str, ProbeResult]:
    """The roles of `roles` that a sidecar's `/status` answer describes validly.

    A role missing, with a status a sidecar may not report, or not an object is left out (the
    kubelet's view stands for it); a metric out of bounds is dropped, a message cut short.
    """
    entries = payload.get("roles") if isinstance(payload, dict) else None
    if not isinstance(entries, dict):
        return {}
    out: dict[str, ProbeResult] = {}
    for role in roles:
        entry = entries.get(role)
        if not isinstance(entry, dict):
            continue
        try:
            status = ProcessStatus(str(entry.get("status")))
        except ValueError:
            continue
        if status not in REPORTABLE:
            continue
        message = entry.get("message")
        out[role] = ProbeResult(
            status=status,
            height=_count(entry.get("height")),
            network_height=_count(entry.get("network_height")),
            peers=_count(entry.get("peers")),
            sync_progress=_fraction(entry.get("sync_progress")),
            message=storable_excerpt(message, MAX_MESSAGE_LENGTH)
            if isinstance(message, str) and message
            else None,
        )
    return out
