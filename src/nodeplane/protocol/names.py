"""Validation of user-chosen names that end up in unit names, paths and Kubernetes objects."""

import re

MAX_NODE_NAME_LENGTH = 63

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def node_name_problem(name: str) -> str | None:
    """Return why `name` is not a valid node name (a DNS-1123 label), or None if it is valid."""
    if not name:
        return "name must not be empty"
    if len(name) > MAX_NODE_NAME_LENGTH:
        return f"name must be at most {MAX_NODE_NAME_LENGTH} characters (got {len(name)})"
    if not _DNS1123_LABEL.fullmatch(name):
        return (
            "name must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def is_valid_node_name(name: str) -> bool:
    """True when `name` is a DNS-1123 label of at most 63 characters."""
    return node_name_problem(name) is None
