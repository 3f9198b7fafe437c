"""Bounds a spec must meet when it is written: sane quantities, requests within limits, and
config values the agent can write.

These are checked on every write at the control plane and again by the executor before it
applies a spec, but they are not part of the NodeSpec model: a spec stored before a bound
existed still loads, so its node can still be stopped, changed or deleted.
"""

from dataclasses import dataclass

from nodeplane.protocol.json_values import MAX_JSON_INTEGER
from nodeplane.protocol.quantities import QuantityKind, quantity_problem, quantity_value
from nodeplane.protocol.spec import NodeSpec


@dataclass(frozen=True)
class SpecProblem:
    """One refused value: its dotted wire path and why."""

    path: str
    message: str


def _quantities(spec: NodeSpec) -> list[tuple[str, str | None, QuantityKind]]:
    r = spec.resources
    return [
        ("storage.size", spec.storage.size, QuantityKind.STORAGE),
        ("resources.cpuRequest", r.cpu_request, QuantityKind.CPU),
        ("resources.cpuLimit", r.cpu_limit, QuantityKind.CPU),
        ("resources.memoryRequest", r.memory_request, QuantityKind.MEMORY),
        ("resources.memoryLimit", r.memory_limit, QuantityKind.MEMORY),
    ]


def spec_bound_problems(spec: NodeSpec) -> list[SpecProblem]:
    """Every bound `spec` breaks, in a stable order; empty when it may be written."""
    problems: list[SpecProblem] = []
    valid: dict[str, str] = {}
    for path, quantity, kind in _quantities(spec):
        if quantity is None:
            continue
        if why := quantity_problem(quantity, kind):
            problems.append(SpecProblem(path, why))
        else:
            valid[path] = quantity
    for what in ("cpu", "memory"):
        request = valid.get(f"resources.{what}Request")
        limit = valid.get(f"resources.{what}Limit")
        if request and limit and quantity_value(request) > quantity_value(limit):
            problems.append(
                SpecProblem(
                    f"resources.{what}Request",
                    f"{what} request {request} is more than the limit {limit}",
                )
            )
    for role, entries in spec.overrides.files.items():
        for key, value in entries.items():
            if isinstance(value, int) and abs(value) > MAX_JSON_INTEGER:
                problems.append(
                    SpecProblem(
                        f"overrides.files.{role}.{key}",
                        f"integers must lie within ±{MAX_JSON_INTEGER}",
                    )
                )
    return problems
