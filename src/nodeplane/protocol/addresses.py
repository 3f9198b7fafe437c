"""Listen addresses as users write them (`host:port`, `[v6]:port`), for the control plane's
and the agent's metrics sockets alike."""


def parse_listen_address(value: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as a host and a port; ValueError if it is not one."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)
