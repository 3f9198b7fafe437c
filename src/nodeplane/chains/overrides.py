"""User overrides, checked again at render time (DESIGN §7) and merged with what adapters set.

The control plane refuses what the adapters' declared rules refuse (managed keys and flags,
values a config format cannot hold, file paths outside the node's directory); the executor must
not trust that, so every adapter runs `check_overrides` before rendering, applying the same
protocol function to its own declarations. Flags stay single argv words (the executor never
hands them to a shell); config values must fit on one line.
"""

import re
from collections.abc import Iterable, Mapping, Sequence

from nodeplane.chains.base import ClientDef, InvalidNodeConfig
from nodeplane.protocol import NodeSpec
from nodeplane.protocol.capabilities import client_override_problems
from nodeplane.protocol.capabilities import is_managed_flag as declared_managed_flag
from nodeplane.protocol.override_rules import flag_name, loose_name
from nodeplane.protocol.spec import ConfigValue

MAX_TEXT_LENGTH = 4096
CONFIG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LINE_BREAKS = frozenset("\x85\u2028\u2029")

__all__ = [
    "ConfigValue",
    "check_overrides",
    "flag_name",
    "format_config_value",
    "is_managed_flag",
    "merge_args",
]


def text_problem(value: str) -> str | None:
    """Why `value` cannot be placed in an argv word or a config line, or None."""
    if len(value) > MAX_TEXT_LENGTH:
        return f"longer than {MAX_TEXT_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 or ch in _LINE_BREAKS for ch in value):
        return "contains a newline or another control character"
    return None


def _type_problem(value: ConfigValue, kind: str | None) -> str | None:
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return "must be an integer"
    if kind == "bool" and not (isinstance(value, bool) or value in (0, 1)):
        return "must be a boolean"
    if kind == "str" and not isinstance(value, str):
        return "must be a string"
    return None


def _value_problem(value: ConfigValue, kind: str | None) -> str | None:
    if isinstance(value, str) and (why := text_problem(value)):
        return why
    return _type_problem(value, kind)


def is_managed_flag(client: ClientDef, flag: str) -> bool:
    """Whether `flag` sets something `client` manages itself (the protocol's rule)."""
    return declared_managed_flag(client.capability(), flag)


def check_overrides(spec: NodeSpec, clients: Mapping[str, ClientDef]) -> None:
    """Refuse overrides that break the clients' declared rules or cannot be rendered safely.

    `clients` maps each role of the spec to its client. Raises InvalidNodeConfig listing every
    problem at once.
    """
    problems: dict[str, str] = {}
    for role, entries in spec.overrides.files.items():
        client = clients.get(role)
        declared = (
            client_override_problems(role, client.capability(), entries, ()) if client else {}
        )
        for key, value in entries.items():
            offender = f"files.{role}.{key}"
            if client is None:
                problems[offender] = f"no role {role!r} in this node"
            elif not CONFIG_KEY.fullmatch(key):
                problems[offender] = "not a valid config key"
            elif offender in declared:
                problems[offender] = declared[offender]
            elif why := _value_problem(value, client.known_config_keys.get(key)):
                problems[offender] = why
    for role, flags in spec.overrides.args.items():
        client = clients.get(role)
        declared = client_override_problems(role, client.capability(), {}, flags) if client else {}
        for flag in flags:
            offender = f"args.{role}: {flag}"
            if client is None:
                problems[offender] = f"no role {role!r} in this node"
            elif not flag.startswith("-") or not flag.strip("-"):
                problems[offender] = "not a flag (must start with '-')"
            elif why := text_problem(flag):
                problems[offender] = why
            elif offender in declared:
                problems[offender] = declared[offender]
    if problems:
        raise InvalidNodeConfig(problems)


def merge_args(
    managed: Sequence[str], defaults: Iterable[Sequence[str]], user: Sequence[str]
) -> list[str]:
    """Managed flags, then each default group the user did not set, then the user's flags.

    A default group (say Prysm's checkpoint URL and genesis URL) is dropped whole when the
    user sets any flag it contains, so a user value never fights a default for the same flag.
    """
    user_names = {loose_name(flag_name(f)) for f in user}
    kept = [
        word
        for group in defaults
        if not any(loose_name(flag_name(w)) in user_names for w in group)
        for word in group
    ]
    return [*managed, *kept, *user]


def format_config_value(value: ConfigValue) -> str:
    """How a typed override value is written in a `key=value` config line."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
