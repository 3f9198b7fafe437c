"""nodeplane: a self-hosted control plane for blockchain nodes."""


def __getattr__(name: str) -> str:
    # `__version__` is read from the installed metadata on first use: importlib.metadata costs
    # every `nodeplane` command about 60 ms at start, and most never ask for the version.
    if name != "__version__":
        raise AttributeError(f"module 'nodeplane' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("nodeplane")
    except PackageNotFoundError:  # running from a source tree without installing
        found = "0.0.0+source"
    globals()["__version__"] = found
    return found
