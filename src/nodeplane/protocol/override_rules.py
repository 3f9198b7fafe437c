"""Rules for override values that adapters declare and both sides apply (DESIGN §7).

An adapter names, in its capabilities, which flags and config keys take a file path and which
value rules its config format needs. The control plane applies these pure functions to refuse a
spec up front; the executor applies the same functions again before it renders anything.
"""

import re
from enum import StrEnum
from pathlib import PurePosixPath

from nodeplane.protocol.spec import ConfigValue


def flag_name(flag: str) -> str:
    """`--http.port=8545` -> `http.port`; `-regtest` -> `regtest`."""
    return flag.lstrip("-").split("=", 1)[0]


def flag_value(flag: str) -> str | None:
    """`--nodekey=a/b` -> `a/b`; `--nodekey` -> None (no `=`)."""
    _, sep, value = flag.partition("=")
    return value if sep else None


def loose_name(name: str) -> str:
    """A name as clients with case-insensitive, separator-agnostic flags read it."""
    return re.sub(r"[-._]", "", name).lower()


class ConfigValueRule(StrEnum):
    """A restriction a client's config-file format puts on values, named in its capabilities."""

    # INI formats that cut a line at '#' (Bitcoin Core): a value holding one would be truncated.
    NO_HASH = "no-hash"


def config_value_rule_problem(rule: str, value: ConfigValue) -> str | None:
    """Why `value` breaks the named rule, or None; a rule this side does not know is skipped
    (the executor that declared it still applies it)."""
    if rule == ConfigValueRule.NO_HASH and isinstance(value, str) and "#" in value:
        return "must not contain '#' (starts a comment in the config file)"
    return None


def path_value_problem(value: str | None) -> str | None:
    """Why `value` may not be given to an option that names a file, or None.

    Such a value must be a relative path that stays inside the directory the client resolves it
    from (always inside the node's own directory): not empty, no leading `/` or `~`, and no
    `..` component; and no `$`, which some clients expand from the environment (geth turns
    `$HOME/x` into an absolute path).
    """
    if value is None:
        return "takes a file path: give it as <name>=<relative path>"
    if not value:
        return "needs a relative path inside the node's directory"
    if value.startswith(("/", "~")):
        return "must be a relative path inside the node's directory (no leading '/' or '~')"
    if ".." in PurePosixPath(value).parts:
        return "must stay inside the node's directory (no '..')"
    if "$" in value:
        return "must not name environment variables ('$')"
    return None
