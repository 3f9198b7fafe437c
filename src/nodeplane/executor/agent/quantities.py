"""Kubernetes-style quantities ("500m", "2", "4Gi") as numbers the agent can give systemd."""

import re

_SUFFIX = {
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
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|K|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def cpu_cores(quantity: str) -> float:
    """CPU cores: "500m" → 0.5, "2" → 2.0."""
    match = _QUANTITY.fullmatch(quantity)
    if not match:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    number, suffix = float(match.group(1)), match.group(2) or ""
    return number / 1000 if suffix == "m" else number * _SUFFIX[suffix]


def memory_bytes(quantity: str) -> int:
    """Bytes: "4Gi" → 4294967296, "512M" → 512000000."""
    match = _QUANTITY.fullmatch(quantity)
    if not match or match.group(2) == "m":
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match.group(1)) * _SUFFIX[match.group(2) or ""])
