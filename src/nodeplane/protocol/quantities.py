"""Kubernetes-style quantities ("500m", "2", "4Gi"): their numeric value and the sane bounds.

One parser for both sides: the control plane refuses a quantity out of bounds, the agent turns
the same string into what systemd takes. Parsing uses Decimal, so "1.5Gi" is exact and a long
number cannot overflow a float.
"""

import re
from decimal import Decimal
from enum import StrEnum

_SUFFIX: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|K|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?")
# Enough digits for a size in plain bytes up to exabytes; the length is checked before the value.
MAX_INTEGER_DIGITS = 19
MAX_FRACTION_DIGITS = 9


class QuantityKind(StrEnum):
    """What a quantity measures, which decides its unit and its upper bound."""

    CPU = "cpu"
    MEMORY = "memory"
    STORAGE = "storage"


MAX_QUANTITY: dict[QuantityKind, Decimal] = {
    QuantityKind.CPU: Decimal(4096),  # cores
    QuantityKind.MEMORY: Decimal(2**50),  # 1 PiB
    QuantityKind.STORAGE: Decimal(2**60),  # 1 EiB
}
_UNIT = {QuantityKind.CPU: "cores", QuantityKind.MEMORY: "bytes", QuantityKind.STORAGE: "bytes"}


def quantity_value(quantity: str) -> Decimal:
    """The number a quantity stands for: "500m" → 0.5, "4Gi" → 4294967296."""
    match = _QUANTITY.fullmatch(quantity)
    if not match:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    return number / 1000 if suffix == "m" else number * _SUFFIX[suffix]


def quantity_problem(quantity: str, kind: QuantityKind) -> str | None:
    """Why `quantity` is not a sane amount of `kind`, or None."""
    match = _QUANTITY.fullmatch(quantity)
    if not match:
        return f"{quantity[:40]!r} is not a quantity (for example 2, 500m, 4Gi)"
    whole, _, fraction = match.group(1).partition(".")
    if len(whole) > MAX_INTEGER_DIGITS or len(fraction) > MAX_FRACTION_DIGITS:
        return (
            f"at most {MAX_INTEGER_DIGITS} digits before the point and "
            f"{MAX_FRACTION_DIGITS} after it"
        )
    if kind is not QuantityKind.CPU and match.group(2) == "m":
        return f"{kind.value} cannot be given in thousandths ('m')"
    maximum = MAX_QUANTITY[kind]
    if quantity_value(quantity) > maximum:
        return f"{kind.value} must be at most {maximum:,} {_UNIT[kind]}"
    return None


def cpu_cores(quantity: str) -> float:
    """CPU cores: "500m" → 0.5, "2" → 2.0; ValueError past the bounds."""
    if problem := quantity_problem(quantity, QuantityKind.CPU):
        raise ValueError(problem)
    return float(quantity_value(quantity))


def memory_bytes(quantity: str) -> int:
    """Bytes: "4Gi" → 4294967296, "512M" → 512000000; ValueError past the bounds."""
    if problem := quantity_problem(quantity, QuantityKind.MEMORY):
        raise ValueError(problem)
    return int(quantity_value(quantity))
