"""User overrides, checked again at render time (DESIGN §7) and merged with what adapters set.

The control plane refuses managed keys and flags from the capabilities; the executor must not
trust that, so every adapter runs `check_overrides` before rendering. Flags stay single argv
words (the executor never hands them to a shell); config values must fit on one line.
"""

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from nodeplane.chains.base import ClientDef, InvalidNodeConfig
from nodeplane.protocol import NodeSpec

ConfigValue = str | int | float | bool
ValueCheck = Callable[[ConfigValue], str | None]

MAX_TEXT_LENGTH = 4096
CONFIG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LINE_BREAKS = frozenset("\x85\u2028\u2029")


def flag_name(flag: str) -> str:
    """`--http.port=8545` -> `http.port`; `-regtest` -> `regtest` (same rule as the protocol)."""
    return flag.lstrip("-").split("=", 1)[0]


def loose_name(name: str) -> str:
    """A name as clients with case-insensitive, separator-agnostic flags read it."""
    return re.sub(r"[-._]", "", name).lower()


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


def _value_problem(
    value: ConfigValue, kind: str | None, value_check: "ValueCheck | None"
) -> str | None:
    if isinstance(value, str) and (why := text_problem(value)):
        return why
    if why := _type_problem(value, kind):
        return why
    return value_check(value) if value_check is not None else None


def is_managed_flag(client: ClientDef, flag: str) -> bool:
    """Whether `flag` sets something `client` manages itself."""
    name = flag_name(flag)
    if name in client.managed_flags:
        return True
    if client.loose_flag_names:
        return loose_name(name) in {loose_name(m) for m in client.managed_flags}
    return False


def check_overrides(
    spec: NodeSpec, clients: Mapping[str, ClientDef], value_check: ValueCheck | None = None
) -> None:
    """Refuse overrides that touch managed settings or cannot be rendered safely.

    `clients` maps each role of the spec to its client; `value_check` adds a format-specific
    rule for config values (say, no `#` in an INI value). Raises InvalidNodeConfig.
    """
    problems: dict[str, str] = {}
    for role, entries in spec.overrides.files.items():
        client = clients.get(role)
        for key, value in entries.items():
            offender = f"files.{role}.{key}"
            if client is None:
                problems[offender] = f"no role {role!r} in this node"
            elif not client.accepts_config_files:
                problems[offender] = f"{client.name} takes flags only (overrides.args)"
            elif not CONFIG_KEY.fullmatch(key):
                problems[offender] = "not a valid config key"
            elif key in client.managed_config_keys:
                problems[offender] = "managed by nodeplane"
            elif why := _value_problem(value, client.known_config_keys.get(key), value_check):
                problems[offender] = why
    for role, flags in spec.overrides.args.items():
        client = clients.get(role)
        for flag in flags:
            offender = f"args.{role}: {flag}"
            if client is None:
                problems[offender] = f"no role {role!r} in this node"
            elif not flag.startswith("-") or not flag.strip("-"):
                problems[offender] = "not a flag (must start with '-')"
            elif why := text_problem(flag):
                problems[offender] = why
            elif is_managed_flag(client, flag):
                problems[offender] = "managed by nodeplane"
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
